"""Fixtures for the Hugging Face / Ollama / fallback tests: a loopback server, a refused port, a fake token.

Registered from tests/conftest.py through ``pytest_plugins``. The token is a fake,
passed explicitly; the shared autouse fixture already points HF_HOME at a temporary
directory and removes HF_TOKEN, so a developer's saved token is never read.
HF_HUB_OFFLINE is never set (it blocks loopback requests too).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.loopback_server import LoopbackServer, refused_url

FAKE_TOKEN = "hf_test_token_not_real"


@pytest.fixture(autouse=True)
def _hub_token_file_in_tmp_home(_isolated_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub fixes its token-file path at import time; point it into this test's HF_HOME too."""
    import os

    from huggingface_hub import constants

    home = Path(os.environ["HF_HOME"])
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(home / "stored_tokens"))


@pytest.fixture(scope="session")
def local_embedder():
    """The packaged ONNX embedder, loaded once."""
    from integrations.adapters.local_embedding import LocalMiniLMEmbedding

    return LocalMiniLMEmbedding()


@pytest.fixture(scope="session")
def loopback_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer().start()
    yield server
    server.stop()


@pytest.fixture
def loopback(loopback_server: LoopbackServer) -> Iterator[LoopbackServer]:
    """The session's loopback server with no recorded requests and no faults."""
    loopback_server.reset()
    yield loopback_server
    loopback_server.reset()


@pytest.fixture
def refused() -> str:
    """A base URL on a free local port where nothing listens."""
    return refused_url()


@pytest.fixture
def fake_token() -> str:
    return FAKE_TOKEN


@pytest.fixture
def saved_token() -> str:
    """A token saved the way `hf auth login` does, in this test's HF_HOME; code under test must never send it."""
    import os

    value = "hf_saved_token_must_never_be_sent"
    home = Path(os.environ["HF_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "token").write_text(value)
    return value


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch, loopback: LoopbackServer, tmp_path: Path) -> LoopbackServer:
    """Environment of `--profile hf_api` pointed at the loopback server (HF routes and Ollama), fast timeouts."""
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("DOCSRAG_HF_BASE_URL", loopback.url)
    monkeypatch.setenv("DOCSRAG_LLM__OLLAMA_BASE_URL", loopback.url)
    monkeypatch.setenv("DOCSRAG_LLM__TIMEOUT_S", "1")
    monkeypatch.setenv("DOCSRAG_LLM__DEADLINE_S", "8")
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "index"))
    return loopback
