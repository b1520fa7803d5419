"""HFChatLLM against the loopback router: body, streaming, events, retries, timeouts, token hygiene."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent

from integrations.adapters.hf_chat_llm import HFChatLLM
from integrations.backend_errors import RetryExhaustedError
from integrations.deadline import question_deadline
from tests.conftest_hf import FAKE_TOKEN

MODEL = "Qwen/Qwen2.5-7B-Instruct"
ASK = [ChatMessage(role="user", content="How do I set the widget timeout?")]


def make(url: str, model: str = MODEL, **kwargs) -> HFChatLLM:
    return HFChatLLM(model_name=model, token=FAKE_TOKEN, base_url=url, **{"timeout": 1.0, **kwargs})


@pytest.fixture
def llm_events():
    events: list = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:
            if isinstance(event, LLMChatStartEvent | LLMChatEndEvent):
                events.append(event)

    root = get_dispatcher()
    handler = Collect()
    root.add_event_handler(handler)
    yield events
    root.event_handlers.remove(handler)


def test_body_carries_the_real_model_id_and_the_url_comes_from_the_base(loopback) -> None:
    llm = make(loopback.url, model="meta-llama/Llama-3.1-8B-Instruct:fastest")
    assert loopback.requests() == []  # no network probe at construction
    response = llm.chat(ASK)
    [request] = loopback.requests()
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "meta-llama/Llama-3.1-8B-Instruct:fastest"
    assert request.body["messages"][-1]["content"] == ASK[0].content
    assert request.headers["authorization"] == f"Bearer {FAKE_TOKEN}"
    assert "How do I set the widget timeout?" in response.message.content
    assert response.additional_kwargs["answered_by"] == "hf_api:meta-llama/Llama-3.1-8B-Instruct:fastest"


def test_stream_survives_the_usage_only_chunk_and_events_carry_usage(loopback, llm_events) -> None:
    llm = make(loopback.url)
    chunks = list(llm.stream_chat(ASK))
    text = "".join(c.delta or "" for c in chunks)
    assert text == chunks[-1].message.content and "widget timeout" in text
    assert chunks[-1].additional_kwargs["total_tokens"] > 0  # from the choices: [] usage chunk
    assert loopback.requests()[0].body["stream"] is True
    starts = [e for e in llm_events if isinstance(e, LLMChatStartEvent)]
    ends = [e for e in llm_events if isinstance(e, LLMChatEndEvent)]
    assert starts and ends and ends[-1].response.raw["usage"]["completion_tokens"] > 0


def test_chat_emits_start_and_end_events_with_token_usage(loopback, llm_events) -> None:
    make(loopback.url).chat(ASK)
    end = [e for e in llm_events if isinstance(e, LLMChatEndEvent)][-1]
    assert end.response.raw["usage"]["prompt_tokens"] > 0
    assert FAKE_TOKEN not in json.dumps([e.model_dump(mode="json") for e in llm_events], default=str)


@pytest.mark.parametrize("fault", [{"kind": "429", "retry_after": 0.2}, {"kind": "503", "estimated_time": 0.2}])
def test_short_waits_are_honoured_and_retried(loopback, fault) -> None:
    loopback.add_fault("chat", times=1, **fault)
    started = time.monotonic()
    response = make(loopback.url).chat(ASK)
    assert time.monotonic() - started >= 0.2
    assert len(loopback.requests("chat")) == 2 and response.message.content


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ({"kind": "429", "retry_after": 30}, "HTTP 429 rate limited (Retry-After 30 s)"),
        ({"kind": "503", "estimated_time": 20}, "HTTP 503 model loading (estimated 20 s)"),
    ],
)
def test_waits_longer_than_the_deadline_give_up_at_once(loopback, fault, reason) -> None:
    loopback.add_fault("chat", **fault)
    started = time.monotonic()
    with question_deadline(time.monotonic() + 3), pytest.raises(RetryExhaustedError) as info:
        make(loopback.url).chat(ASK)
    assert time.monotonic() - started < 1.5
    assert reason in str(info.value) and "deadline" in str(info.value)
    assert len(loopback.requests("chat")) == 1


def test_retries_stop_after_max_retries(loopback) -> None:
    loopback.add_fault("chat", kind="503", estimated_time=0.05)
    with pytest.raises(RetryExhaustedError, match="after 2 attempts"):
        make(loopback.url, max_retries=1).chat(ASK)


def test_slow_reply_times_out_at_the_configured_timeout(loopback) -> None:
    loopback.add_fault("chat", kind="slow", delay=2.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        make(loopback.url, timeout=0.3).chat(ASK)
    assert time.monotonic() - started < 1.5


def test_the_timeout_is_capped_by_the_question_deadline(loopback) -> None:
    loopback.add_fault("chat", kind="slow", delay=2.0)
    started = time.monotonic()
    with question_deadline(time.monotonic() + 0.4), pytest.raises(TimeoutError):
        make(loopback.url, timeout=30).chat(ASK)
    assert time.monotonic() - started < 1.5


def test_missing_token_fails_naming_hf_token_and_a_saved_token_is_not_used(loopback, saved_token) -> None:
    with pytest.raises(ValueError, match="HF_TOKEN"):
        HFChatLLM(model_name=MODEL, token=None, base_url=loopback.url)
    assert loopback.requests() == []


def test_token_is_not_in_the_model_dump_repr_or_events(loopback) -> None:
    llm = make(loopback.url)
    assert FAKE_TOKEN not in repr(llm) + llm.model_dump_json() + json.dumps(llm.to_dict(), default=str) + json.dumps(llm.to_payload())


def test_async_calls_work_across_event_loops(loopback) -> None:
    llm = make(loopback.url)
    for _ in range(2):  # the stock async client breaks on the second loop
        assert asyncio.run(llm.achat(ASK)).message.content

    async def stream() -> str:
        return "".join([c.delta async for c in await llm.astream_chat(ASK)])

    assert "widget" in asyncio.run(stream())


def test_keep_alive_connection_serves_many_calls(loopback) -> None:
    llm = make(loopback.url)
    for i in range(6):
        llm.chat([ChatMessage(role="user", content=f"question {i}")]) if i % 2 else list(llm.stream_chat(ASK))
    assert len(loopback.requests("chat")) == 6


def test_a_wait_longer_than_max_wait_moves_on_even_within_the_deadline(loopback) -> None:
    loopback.add_fault("chat", kind="503", estimated_time=20)
    started = time.monotonic()
    with question_deadline(time.monotonic() + 60), pytest.raises(RetryExhaustedError, match=r"estimated 20 s\) > 10 s longest wait"):
        make(loopback.url).chat(ASK)
    assert time.monotonic() - started < 1.0


SYSTEM_ASK = [ChatMessage(role="system", content="Answer from the sources only."), *ASK]


@pytest.mark.parametrize(
    "gemma", ["google/gemma-2-2b-it", "google/gemma-2-9b-it"], ids=["400 (vLLM-style)", "422 (text-generation-inference)"]
)
def test_a_template_without_a_system_role_gets_it_folded_into_the_first_user_turn_remembered_per_model(loopback, gemma) -> None:
    HFChatLLM._no_system_role.discard(gemma)
    first = make(loopback.url, model=gemma).chat(SYSTEM_ASK)
    assert first.message.content.startswith(f"Echo from {gemma}")
    rejected, folded = loopback.requests("chat")
    assert rejected.body["messages"][0]["role"] == "system"
    assert [m["role"] for m in folded.body["messages"]] == ["user"]
    assert folded.body["messages"][0]["content"].startswith("Answer from the sources only.\n\nHow do I set")
    loopback.reset()
    "".join(c.delta for c in make(loopback.url, model=gemma).stream_chat(SYSTEM_ASK))  # a new instance: folded at once
    [request] = loopback.requests("chat")
    assert [m["role"] for m in request.body["messages"]] == ["user"]
    make(loopback.url).chat(SYSTEM_ASK)  # other models keep their system message
    assert loopback.requests("chat")[-1].body["messages"][0]["role"] == "system"


def test_an_unknown_model_is_a_400_that_is_not_retried(loopback) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError) as caught:
        make(loopback.url, model="someone/not-served").chat(SYSTEM_ASK)
    assert caught.value.response.status_code == 400 and "not supported by any provider" in str(caught.value)
    assert len(loopback.requests("chat")) == 2  # the system-role retry, then no more


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_cut_at_max_tokens_is_marked_and_carries_a_notice(loopback, stream) -> None:
    llm = make(loopback.url, num_output=3)
    if stream:
        chunks = list(llm.stream_chat(ASK))
        extra = {k: v for c in chunks for k, v in c.additional_kwargs.items()}
    else:
        extra = llm.chat(ASK).additional_kwargs
    assert extra["truncated"] is True and "cut at the answer-length limit" in extra["notices"][0]
    assert "truncated" not in make(loopback.url).chat(ASK).additional_kwargs


def test_usage_is_asked_for_in_streams_and_the_crlf_sse_variant_is_read(loopback) -> None:
    loopback.add_fault("chat", "crlf")
    chunks = list(make(loopback.url).stream_chat(ASK))
    assert "".join(c.delta for c in chunks).startswith("Echo from")
    assert loopback.requests("chat")[0].body["stream_options"] == {"include_usage": True}
    assert any("completion_tokens" in c.additional_kwargs for c in chunks)


@pytest.mark.parametrize("kind", ["429_date", "429_ratelimit"])
def test_rate_limit_waits_come_from_an_http_date_or_the_ratelimit_header(loopback, kind) -> None:
    loopback.add_fault("chat", kind, retry_after=30)
    with pytest.raises(RetryExhaustedError, match=r"(Retry-After|RateLimit reset in) (29|30)") as caught:
        make(loopback.url, max_wait_s=60, deadline_s=5).chat(ASK)
    assert len(loopback.requests("chat")) == 1 and 28 <= caught.value.wait_s <= 30
    loopback.reset()
    loopback.add_fault("chat", kind, retry_after=1, times=1)
    assert make(loopback.url, deadline_s=5).chat(ASK).message.content.startswith("Echo from")
