"""The hf_api profile's chat path against a real OpenAI-compatible server: llama.cpp's, serving the packaged SmolLM2.

``python -m llama_cpp.server`` (the local-LLM extra with its server dependencies, requirements-local-llm.txt) speaks
the chat-completions protocol of the Hugging Face router: Bearer authentication, SSE streams, ``usage``,
``finish_reason``. The chain is built from the ``hf_api`` profile with the router URL pointed at it; its next member,
Ollama, is the loopback fake. Killing the server while it answers must hand the question to that next member.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatInProgressEvent
from llama_index.core.schema import TextNode

from integrations.adapters.local_llm import bundled_gguf
from integrations.citation_prompt import build_messages
from tests.chromium import free_port, wait_http
from tests.conftest_hf import FAKE_TOKEN

pytestmark = [
    pytest.mark.local_llm,
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("llama_cpp", "fastapi", "sse_starlette", "starlette_context"))
        or bundled_gguf() is None,
        reason="needs the local LLM extra with its server dependencies: make extras",
    ),
]

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the name the chain sends; the server serves its one model under it
LABEL = f"hf_api:{MODEL}"
OLLAMA_LABEL = "ollama:llama3.2:3b"
QUESTION = "How long does the widget wait for a reply by default?"
SOURCE = TextNode(text="The --timeout flag sets how long the widget waits for a reply. The default timeout is 30 seconds.")
MESSAGES = build_messages(QUESTION, [SOURCE])
# About 3,300 prompt tokens: reading them takes llama.cpp seconds (over a second even at 2,000 tokens/s), so the server
# can be killed while it works, well after the request reached it.
LONG = build_messages(
    QUESTION,
    [SOURCE, *(TextNode(text=f"Section {i}. " + "The widget logs each retry with its delay and status. " * 10) for i in range(24))],
)
KILL_AFTER_S = 0.5
START_TIMEOUT_S = 120


class LlamaServer:
    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(bundled_gguf()), "--model_alias", MODEL,
            "--host", "127.0.0.1", "--port", str(self.port), "--api_key", FAKE_TOKEN, "--n_ctx", "4096", "--n_threads", "1",
        ]  # fmt: skip
        self._log = log.open("w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"{self.url}/docs", START_TIMEOUT_S, self.process)  # served once the model is loaded
        except BaseException:
            self.stop()
            raise

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture
def llama_server(tmp_path: Path) -> Iterator[LlamaServer]:
    server = LlamaServer(tmp_path / "llama_server.log")
    yield server
    server.stop()


@pytest.fixture
def profile(monkeypatch, llama_server: LlamaServer, loopback, tmp_path: Path):
    """The hf_api profile with its router at the llama.cpp server and Ollama at the loopback fake: (settings, chain, meter)."""
    from app.composition import build_llm, open_meter
    from settings import load_settings

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)  # also the server's --api_key: a wrong token is refused
    monkeypatch.setenv("DOCSRAG_HF_BASE_URL", llama_server.url)
    monkeypatch.setenv("DOCSRAG_LLM__HF_MODELS", f'["{MODEL}"]')
    monkeypatch.setenv("DOCSRAG_LLM__OLLAMA_BASE_URL", loopback.url)
    monkeypatch.setenv("DOCSRAG_LLM__MAX_TOKENS", "24")
    # A loaded 2-core machine (CI beside other jobs) can take tens of seconds for SmolLM2's prefill: time-outs are not
    # what these tests are about, so they must not move the question to the next member.
    monkeypatch.setenv("DOCSRAG_LLM__TIMEOUT_S", "180")
    monkeypatch.setenv("DOCSRAG_LLM__DEADLINE_S", "360")
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "index"))
    settings = load_settings("hf_api")
    meter = open_meter(settings)
    chain = build_llm(settings, meter)
    assert chain.labels == [LABEL, OLLAMA_LABEL]
    yield settings, chain, meter
    meter.close()


def usage_rows(settings) -> list[tuple]:
    with sqlite3.connect(settings.storage.index_dir / "usage.sqlite") as db:
        return db.execute("SELECT kind, model, tokens_in, tokens_out, ok, estimated, cost_usd FROM usage ORDER BY ts").fetchall()


def test_chat_and_stream_answer_with_usage_metered_and_a_cut_answer_marked(profile, loopback) -> None:
    settings, chain, meter = profile
    response = chain.chat(MESSAGES)
    extra = response.additional_kwargs
    assert response.message.content.strip() and extra["answered_by"] == LABEL and extra["fallbacks"] == []
    usage = response.raw["usage"]  # what the server reported
    assert usage["prompt_tokens"] > 50 and 0 < usage["completion_tokens"] <= 24
    assert {k: extra[k] for k in usage} == usage
    # The system message went through as a system message: SmolLM2's template has a system role, so nothing was folded.
    member = chain.members[0]
    assert MODEL not in type(getattr(member, "llm", member))._no_system_role  # a paid member is metered around it

    chunks = list(chain.stream_chat(MESSAGES))
    assert sum(bool(c.delta) for c in chunks) > 1 and chunks[-1].message.content.strip()
    assert "".join(c.delta or "" for c in chunks) == chunks[-1].message.content
    assert chunks[-1].additional_kwargs["answered_by"] == LABEL
    # llama-cpp-python's server ignores stream_options.include_usage: a stream carries no usage, so the meter
    # counts its tokens with the bundled tokenizer and marks the row estimated.
    assert not any("total_tokens" in c.additional_kwargs for c in chunks)

    [chat_row, stream_row] = usage_rows(settings)
    assert chat_row[:6] == ("chat", MODEL, usage["prompt_tokens"], usage["completion_tokens"], 1, 0)
    assert chat_row[6] == pytest.approx(meter.cost(MODEL, usage["prompt_tokens"], usage["completion_tokens"]))
    assert stream_row[:2] == ("chat", MODEL) and stream_row[4:6] == (1, 1) and stream_row[2] > 50 and stream_row[3] > 0
    assert meter.month_spend() == pytest.approx(chat_row[6] + stream_row[6])

    from integrations.adapters.hf_chat_llm import HFChatLLM

    short = HFChatLLM(model_name=MODEL, token=FAKE_TOKEN, base_url=settings.hf_base_url, num_output=3, timeout=60)
    for extra in (
        short.chat(MESSAGES).additional_kwargs,
        {k: v for c in short.stream_chat(MESSAGES) for k, v in c.additional_kwargs.items()},
    ):
        assert extra["truncated"] is True and "cut at the answer-length limit" in extra["notices"][0]
    assert loopback.requests() == []  # Ollama, the next member, was never needed


def test_a_wrong_token_is_refused_by_the_server_and_the_next_member_answers(profile) -> None:
    from integrations.adapters.hf_chat_llm import HFChatLLM
    from integrations.fallback_llm import FallbackLLM

    settings, chain, _ = profile
    wrong = HFChatLLM(model_name=MODEL, token="hf_not_the_servers_key", base_url=settings.hf_base_url, timeout=60)
    response = FallbackLLM(members=[wrong, chain.members[1]]).chat(MESSAGES)
    assert response.additional_kwargs["answered_by"] == OLLAMA_LABEL
    assert response.additional_kwargs["fallbacks"] == [f"{LABEL}: HTTP 401: Invalid API key"]


@pytest.mark.parametrize("mode", ["chat", "stream"])
def test_a_server_killed_while_it_answers_hands_the_question_to_the_next_member(profile, llama_server, loopback, mode) -> None:
    _, chain, _ = profile
    killer = threading.Timer(KILL_AFTER_S, llama_server.kill)  # the server is still reading the long prompt then
    started = time.monotonic()
    killer.start()
    try:
        if mode == "chat":
            response = chain.chat(LONG)
            text, extra = response.message.content, response.additional_kwargs
        else:
            chunks = list(chain.stream_chat(LONG))
            text, extra = "".join(c.delta or "" for c in chunks), chunks[-1].additional_kwargs
    finally:
        killer.join()
    assert llama_server.process.returncode is not None and time.monotonic() - started >= KILL_AFTER_S
    assert extra["answered_by"] == OLLAMA_LABEL and "[1]" in text
    [reason] = extra["fallbacks"]
    assert reason.startswith(f"{LABEL}: RemoteProtocolError")  # the connection dropped: no HTTP status, no reply
    # Whether the server had sent its status line before it died depends on the machine's load: either way the
    # connection dropped with no reply to read ("incomplete chunked read" or "disconnected without sending a response").
    assert "incomplete chunked read" in reason or "without sending a response" in reason, reason
    assert [r.route for r in loopback.requests()] == ["ollama_chat"]


def test_a_server_killed_after_the_first_streamed_token_is_named_not_silently_truncated(profile, llama_server) -> None:
    from integrations.backend_errors import StreamInterruptedError

    _, chain, _ = profile

    class KillAtFirstToken(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:
            if isinstance(event, LLMChatInProgressEvent) and event.response.delta and llama_server.process.poll() is None:
                llama_server.kill()

    root = get_dispatcher()
    handler = KillAtFirstToken()
    root.add_event_handler(handler)
    received: list[str] = []
    try:
        with pytest.raises(StreamInterruptedError) as info:
            for chunk in chain.stream_chat(MESSAGES):
                received.append(chunk.delta or "")
    finally:
        root.event_handlers.remove(handler)
    assert "".join(received) and LABEL in str(info.value) and "incomplete" in str(info.value)
