"""Shared fixtures: a fresh index per test, real models, real files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from settings import Settings, load_settings

pytest_plugins = ["tests.conftest_hf"]

REPO = Path(__file__).resolve().parent.parent
EVAL = REPO / "eval"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer settings or tokens leak into tests."""
    for key in list(os.environ):
        if key.startswith("DOCSRAG_") or key in {"HF_TOKEN", "HUGGINGFACE_API_TOKEN", "SPACE_ID", "SPACE_HOST"}:
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "user_data"))  # the default index folder is the per-user one
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings("local", storage={"index_dir": str(tmp_path / "index")})


@pytest.fixture
def runtime(settings: Settings) -> Iterator:
    from app.composition import open_runtime

    rt = open_runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def ingestor(runtime) -> Iterator:
    from app.composition import build_ingestor

    ing = build_ingestor(runtime)
    yield ing
    ing.close()


@pytest.fixture
def embedding_calls() -> Iterator[list[int]]:
    """Texts embedded per embedding call, seen through LlamaIndex's instrumentation events."""
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent

    calls: list[int] = []

    class Counter(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:
            if isinstance(event, EmbeddingEndEvent):
                calls.append(len(event.chunks))

    root = get_dispatcher()
    handler = Counter()
    root.add_event_handler(handler)
    yield calls
    root.event_handlers.remove(handler)


def serve_store(index: Path) -> tuple[subprocess.Popen, str]:
    """``python -m app serve-store`` in its own process, and the URI it serves once it says so."""
    from integrations.adapters.milvus_store import free_port

    server = subprocess.Popen(
        [sys.executable, "-m", "app", "serve-store", "--index", str(index), "--port", str(free_port())],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline:
        line = server.stdout.readline()
        if not line:
            pytest.fail(f"serve-store exited: {server.stderr.read()}")
        found = re.search(r"DOCSRAG_STORAGE__URI=(\S+)", line)
        if found:
            return server, found.group(1)
    server.kill()
    pytest.fail("serve-store did not start within 60 s")
