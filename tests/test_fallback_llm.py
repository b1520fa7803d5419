"""FallbackLLM over real HTTP: every fault × (chat, stream) × chain position ends in the next backend's answer."""

from __future__ import annotations

import json
import logging
import time

import pytest
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.schema import TextNode

from integrations.adapters.hf_chat_llm import HFChatLLM
from integrations.adapters.ollama_llm import OllamaLLM
from integrations.backend_errors import AllBackendsFailedError, StreamInterruptedError
from integrations.citation_prompt import build_messages
from integrations.fallback_llm import BackendSkippedEvent, FallbackLLM
from tests.conftest_hf import FAKE_TOKEN

A, B, OLLAMA = "org/model-a", "org/model-b", "llama3.2:3b"
LABELS = [f"hf_api:{A}", f"hf_api:{B}", f"ollama:{OLLAMA}"]
QUESTION = "How long does the widget wait for a reply by default?"
NODES = [
    TextNode(text="The --timeout flag sets how long the widget waits for a reply, in seconds. The default timeout is 30 seconds."),
    TextNode(text="Install the widget with pip install widget. The installer checks the Python version first."),
]
MESSAGES = build_messages(QUESTION, NODES)
DEADLINE_S = 6.0
TIMEOUT_S = 0.5
FAULTS = ["429", "503", "slow", "refused", "malformed", "500", "stream_error"]


def ollama(url: str, timeout_s: float = TIMEOUT_S, **kwargs) -> OllamaLLM:
    return OllamaLLM(
        model=OLLAMA, base_url=url, context_window=4096, request_timeout=timeout_s, load_allowance_s=0, is_function_calling_model=False,
        **kwargs,
    )  # fmt: skip


def chain(loopback, refused: str | None = None, failing: int = 0, deadline_s: float = DEADLINE_S, timeout_s: float = TIMEOUT_S):
    """A, B (HF models), Ollama; the first ``failing`` members point at ``refused`` if given."""
    urls = [refused if refused and i < failing else loopback.url for i in range(3)]
    members = [
        HFChatLLM(model_name=A, token=FAKE_TOKEN, base_url=urls[0], timeout=timeout_s),
        HFChatLLM(model_name=B, token=FAKE_TOKEN, base_url=urls[1], timeout=timeout_s),
        ollama(urls[2], timeout_s),
    ]
    return FallbackLLM(members=members, deadline_s=deadline_s)


def inject(loopback, fault: str, failing: int) -> None:
    params = {"retry_after": 30.0, "estimated_time": 20.0, "delay": 1.5}
    for model in [A, B][:failing]:
        loopback.add_fault("chat", fault, model=model, **params)
    if failing >= 3:
        loopback.add_fault("ollama_chat", fault, model=OLLAMA, **params)


def run(llm: FallbackLLM, mode: str) -> tuple[str, dict]:
    if mode == "chat":
        response = llm.chat(MESSAGES)
        return response.message.content or "", response.additional_kwargs
    chunks = list(llm.stream_chat(MESSAGES))
    return "".join(c.delta or "" for c in chunks), chunks[-1].additional_kwargs


@pytest.mark.parametrize("failing", [1, 2, 3], ids=["A fails", "A+B fail", "A+B+ollama fail"])
@pytest.mark.parametrize(
    ("fault", "mode"), [(f, m) for f in FAULTS for m in ("chat", "stream") if m == "stream" or not f.startswith("stream")]
)
def test_every_fault_ends_in_the_next_backends_answer(loopback, refused, fault, mode, failing) -> None:
    llm = chain(loopback, refused if fault == "refused" else None, failing)
    if fault != "refused":
        inject(loopback, fault, failing)
    started = time.monotonic()
    if failing == 3:  # every member failed: the error carries each reason (the synthesizer then quotes the sources)
        with pytest.raises(AllBackendsFailedError) as info:
            run(llm, mode)
        assert [f.split(": ", 1)[0] for f in info.value.fallbacks] == LABELS
        assert time.monotonic() - started < DEADLINE_S
        return
    text, extra = run(llm, mode)
    elapsed = time.monotonic() - started
    assert extra["answered_by"] == LABELS[failing]
    assert [f.split(": ", 1)[0] for f in extra["fallbacks"]] == LABELS[:failing]
    assert elapsed < DEADLINE_S, f"took {elapsed:.1f} s"
    assert "[1]" in text
    route = "chat" if failing < 2 else "ollama_chat"
    answering = [r for r in loopback.requests(route) if r.model == (B if failing == 1 else OLLAMA)]
    assert answering and QUESTION in json.dumps(answering[-1].body)


def test_reasons_name_the_status_and_the_wait(loopback) -> None:
    loopback.add_fault("chat", "503", model=A, estimated_time=20)
    loopback.add_fault("chat", "429", model=B, retry_after=30)
    _, extra = run(chain(loopback), "chat")
    assert extra["fallbacks"][0].startswith(f"hf_api:{A}: HTTP 503 model loading (estimated 20 s) >")
    assert extra["fallbacks"][1].startswith(f"hf_api:{B}: HTTP 429 rate limited (Retry-After 30 s) >")
    assert extra["answered_by"] == f"ollama:{OLLAMA}"


def test_a_short_loading_wait_is_retried_on_the_same_model(loopback) -> None:
    loopback.add_fault("chat", "503", model=A, estimated_time=0.2, times=1)
    _, extra = run(chain(loopback), "stream")
    assert extra["answered_by"] == f"hf_api:{A}" and extra["fallbacks"] == []


@pytest.mark.parametrize(("route", "model", "label"), [("chat", A, f"hf_api:{A}"), ("ollama_chat", OLLAMA, f"ollama:{OLLAMA}")])
def test_failure_after_the_first_token_is_a_clear_error_not_a_truncation(loopback, route, model, label) -> None:
    if route == "ollama_chat":
        inject(loopback, "500", 2)
    loopback.add_fault(route, "stream_error_after_token", model=model)
    received = []
    with pytest.raises(StreamInterruptedError) as info:
        for chunk in chain(loopback).stream_chat(MESSAGES):
            received.append(chunk.delta)
    assert received and label in str(info.value) and "incomplete" in str(info.value)
    if route == "chat":
        assert not [r for r in loopback.requests("chat") if r.model == B]  # no fallback after the first token


def test_the_deadline_covers_the_whole_question(loopback) -> None:
    loopback.add_fault("chat", "slow", model=A, delay=3.0)
    started = time.monotonic()
    _, extra = run(chain(loopback, deadline_s=1.0, timeout_s=5.0), "chat")
    assert time.monotonic() - started < 1.8
    assert extra["answered_by"] == f"ollama:{OLLAMA}"  # the last member is always tried
    assert "deadline" in extra["fallbacks"][1]


def test_token_appears_only_in_authorization_headers(loopback, refused, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    loopback.add_fault("chat", "503", model=A, estimated_time=20)
    loopback.add_fault("chat", "stream_error", model=B)
    _, extra = run(chain(loopback), "stream")
    assert extra["answered_by"] == f"ollama:{OLLAMA}"
    assert FAKE_TOKEN not in caplog.text and FAKE_TOKEN not in json.dumps(extra)
    for request in loopback.requests():
        assert FAKE_TOKEN not in request.raw_body
        others = {k: v for k, v in request.headers.items() if k != "authorization"}
        assert FAKE_TOKEN not in json.dumps(others)
        assert request.headers.get("authorization") == (f"Bearer {FAKE_TOKEN}" if request.route == "chat" else None)
    with pytest.raises(AllBackendsFailedError) as info:
        FallbackLLM(members=[HFChatLLM(model_name=A, token=FAKE_TOKEN, base_url=refused, timeout=0.5)]).chat(MESSAGES)
    assert FAKE_TOKEN not in str(info.value) and f"hf_api:{A}: could not connect" in str(info.value)


def test_skips_are_instrumentation_events_and_completion_api_works(loopback) -> None:
    events: list = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:
            if isinstance(event, BackendSkippedEvent):
                events.append(event)

    root = get_dispatcher()
    handler = Collect()
    root.add_event_handler(handler)
    try:
        loopback.add_fault("chat", "500", model=A)
        completion = chain(loopback).complete(MESSAGES[-1].content)
    finally:
        root.event_handlers.remove(handler)
    assert completion.additional_kwargs["answered_by"] == f"hf_api:{B}" and completion.text
    assert [(e.backend, e.reason) for e in events] == [(f"hf_api:{A}", "HTTP 500: internal error")]


def test_async_chat_and_stream_fall_back_across_event_loops(loopback) -> None:
    import asyncio

    loopback.add_fault("chat", "503", model=A, estimated_time=20)
    llm = chain(loopback)

    async def stream() -> tuple[str, dict]:
        chunks = [c async for c in await llm.astream_chat(MESSAGES)]
        return "".join(c.delta or "" for c in chunks), chunks[-1].additional_kwargs

    for _ in range(2):
        assert asyncio.run(llm.achat(MESSAGES)).additional_kwargs["answered_by"] == f"hf_api:{B}"
        text, extra = asyncio.run(stream())
        assert extra["answered_by"] == f"hf_api:{B}" and "[1]" in text


@pytest.mark.parametrize("mode", ["chat", "stream"])
def test_an_ollama_answer_cut_at_num_predict_is_marked_and_keep_alive_is_sent(loopback, mode) -> None:
    llm = ollama(loopback.url, keep_alive="30m", additional_kwargs={"num_predict": 3})
    if mode == "chat":
        extra = llm.chat(MESSAGES).additional_kwargs
    else:
        extra = {k: v for c in llm.stream_chat(MESSAGES) for k, v in c.additional_kwargs.items()}
    assert extra["truncated"] is True and "cut at the answer-length limit" in extra["notices"][0]
    [request] = loopback.requests("ollama_chat")
    assert request.body["keep_alive"] == "30m" and request.body["options"]["num_predict"] == 3
    assert "truncated" not in ollama(loopback.url).chat(MESSAGES).additional_kwargs


def test_the_ollama_timeout_allows_for_a_model_load() -> None:
    assert OllamaLLM(model=OLLAMA, request_timeout=30, load_allowance_s=60).request_timeout == 90


@pytest.mark.parametrize(
    ("setup", "reason"), [("not_pulled", "Ollama HTTP 404: model 'llama3.2:3b' not found"), ("queue_full", "Ollama HTTP 503")]
)
def test_ollama_refusals_move_on_to_the_next_backend(loopback, setup, reason) -> None:
    if setup == "not_pulled":
        loopback.state.ollama_models.clear()
    else:
        loopback.add_fault("ollama_chat", "503_queue_full")
    llm = FallbackLLM(
        members=[ollama(loopback.url), HFChatLLM(model_name=B, token=FAKE_TOKEN, base_url=loopback.url)], deadline_s=DEADLINE_S
    )
    response = llm.chat(MESSAGES)
    assert response.additional_kwargs["answered_by"] == f"hf_api:{B}"
    assert response.additional_kwargs["fallbacks"][0].startswith(f"ollama:{OLLAMA}: {reason}")


def test_the_deadline_is_total_even_when_a_reply_trickles_in_under_the_socket_timeout(loopback) -> None:
    """Each read arrives within the 1 s socket timeout, the reply takes 4 s: the 1.5 s question deadline still holds."""
    loopback.add_fault("chat", "trickle", model=A, delay=4.0)
    llm = FallbackLLM(
        members=[HFChatLLM(model_name=A, token=FAKE_TOKEN, base_url=loopback.url, timeout=1.0), ollama(loopback.url)],
        deadline_s=1.5,
    )
    started = time.monotonic()
    response = llm.chat(MESSAGES)
    assert time.monotonic() - started < 2.5
    assert response.additional_kwargs["answered_by"] == f"ollama:{OLLAMA}"  # the last member is always tried
    assert "deadline" in response.additional_kwargs["fallbacks"][0]
