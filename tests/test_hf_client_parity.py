"""Our HF requests and reply parsing judged by the official client, ``huggingface_hub.InferenceClient``.

The official client is pointed at the loopback router (its router URLs are module constants, patched here for the
test only) and makes the call a user of the router makes: ``chat_completion(messages, model=<id>)`` through the
server-side auto-router, ``feature_extraction(texts, model=<id>)`` through the hf-inference provider. Our classes make
the same call. Method, path, headers and the JSON body must match field by field, except for the deliberate
differences listed in ``DELIBERATE``, each documented beside our code; both must read the same replies the same way.
"""

from __future__ import annotations

import numpy as np
import pytest
from llama_index.core.base.llms.types import ChatMessage

from integrations.adapters.hf_chat_llm import HFChatLLM
from integrations.adapters.hf_embedding import HFEmbedding
from tests.conftest_hf import FAKE_TOKEN

CHAT_MODEL = "meta-llama/Llama-3.1-8B-Instruct:fastest"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MESSAGES = [
    {"role": "system", "content": "Answer from the sources only."},
    {"role": "user", "content": "How do I set the widget timeout?"},
]
# Sorted: ours sends a batch's distinct texts in sorted order (one request per set of texts, whatever the order).
TEXTS = ["Set --timeout to change how long the widget waits.", "The widget waits 30 seconds by default."]
# Headers that differ on every request whoever sends it.
PER_REQUEST_HEADERS = {"x-amzn-trace-id", "content-length", "host"}
# Body fields where we differ from InferenceClient on purpose (the reason is beside our code).
DELIBERATE = {
    # hf_chat_llm.HFChatLLM._send: usage is sent in a stream only when asked; the meter needs it.
    "chat_stream": {"stream_options": {"include_usage": True}},
}


@pytest.fixture
def official(loopback, monkeypatch):
    """An InferenceClient factory whose router URLs and Hub API point at the loopback server."""
    from huggingface_hub import InferenceClient, constants
    from huggingface_hub.inference import _providers
    from huggingface_hub.inference._providers import hf_inference

    monkeypatch.setattr(_providers.CONVERSATIONAL_AUTO_ROUTER, "base_url", loopback.url)
    monkeypatch.setattr(_providers.PROVIDERS["hf-inference"]["feature-extraction"], "base_url", f"{loopback.url}/hf-inference")
    monkeypatch.setattr(constants, "ENDPOINT", loopback.url)  # the Hub API, asked for a model's task
    hf_inference._check_supported_task.cache_clear()

    def make(**kwargs) -> InferenceClient:
        return InferenceClient(api_key=FAKE_TOKEN, timeout=5, **kwargs)

    yield make
    hf_inference._check_supported_task.cache_clear()


def ours_chat(url: str) -> HFChatLLM:
    return HFChatLLM(model_name=CHAT_MODEL, token=FAKE_TOKEN, base_url=url, num_output=64, temperature=0.1, timeout=5)


def as_chat_messages(messages: list[dict]) -> list[ChatMessage]:
    return [ChatMessage(role=m["role"], content=m["content"]) for m in messages]


def wire(request) -> tuple[str, str, dict[str, str]]:
    return request.method, request.path, {k: v for k, v in request.headers.items() if k not in PER_REQUEST_HEADERS}


def assert_same_request(theirs, ours, deliberate: dict | None = None) -> None:
    assert wire(ours) == wire(theirs)
    assert wire(ours)[2]["authorization"] == f"Bearer {FAKE_TOKEN}" and wire(ours)[2]["content-type"] == "application/json"
    expected = {**theirs.body, **(deliberate or {})}
    assert list(ours.body) == list(expected), "field order (model first, as the router reads it)"
    for field, value in expected.items():
        assert ours.body[field] == value, field


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_chat_requests_match_the_official_client(loopback, official, stream) -> None:
    client = official()
    reply = client.chat_completion(MESSAGES, model=CHAT_MODEL, max_tokens=64, temperature=0.1, stream=stream)
    theirs_text = "".join(c.choices[0].delta.content or "" for c in reply if c.choices) if stream else reply.choices[0].message.content
    llm = ours_chat(loopback.url)
    if stream:
        ours_text = "".join(c.delta for c in llm.stream_chat(as_chat_messages(MESSAGES)))
    else:
        ours_text = llm.chat(as_chat_messages(MESSAGES)).message.content
    theirs, ours = loopback.requests("chat")
    assert_same_request(theirs, ours, DELIBERATE["chat_stream"] if stream else None)
    assert theirs.body["model"] == CHAT_MODEL and theirs.body["messages"] == MESSAGES
    assert ours_text == theirs_text and ours_text.startswith(f"Echo from {CHAT_MODEL}")


def test_embedding_requests_match_the_official_client(loopback, official) -> None:
    theirs_vectors = official(provider="hf-inference").feature_extraction(TEXTS, model=EMBED_MODEL, truncate=True)
    ours_vectors = HFEmbedding(model_name=EMBED_MODEL, token=FAKE_TOKEN, base_url=loopback.url).get_text_embedding_batch(TEXTS)
    task_check, theirs, ours = loopback.requests()
    # The official client first asks the Hub API for the model's task (cached per process); ours does not
    # (hf_embedding.HFEmbedding._post): `doctor` checks the model, and a wrong one fails the first call anyway.
    assert (task_check.method, task_check.path) == ("GET", f"/api/models/{EMBED_MODEL}") and "authorization" not in task_check.headers
    assert_same_request(theirs, ours)
    assert theirs.body == {"inputs": TEXTS, "truncate": True}
    # The same reply read the same way; ours then L2-normalises (the fake's vectors are deliberately not unit length).
    expected = {t: v / np.linalg.norm(v) for t, v in zip(TEXTS, np.asarray(theirs_vectors), strict=True)}
    for text, vector in zip(TEXTS, ours_vectors, strict=True):
        assert np.allclose(vector, expected[text], atol=1e-6)


def test_token_level_embeddings_are_mean_pooled_from_what_the_official_client_reads(loopback, official) -> None:
    loopback.state.token_level_models.add(EMBED_MODEL)
    theirs = official(provider="hf-inference").feature_extraction([TEXTS[0]], model=EMBED_MODEL, truncate=True)
    [ours] = HFEmbedding(model_name=EMBED_MODEL, token=FAKE_TOKEN, base_url=loopback.url).get_text_embedding_batch([TEXTS[0]])
    pooled = np.asarray(theirs)[0].mean(axis=0)
    assert np.asarray(theirs).ndim == 3 and np.allclose(ours, pooled / np.linalg.norm(pooled), atol=1e-6)


@pytest.mark.parametrize("fault", ["crlf", "no_usage"])
def test_streams_are_read_the_same_way_comments_crlf_and_usage_chunks(loopback, official, fault) -> None:
    loopback.add_fault("chat", fault)
    client = official()  # kept referenced: a collected client closes its open stream
    chunks = list(client.chat_completion(MESSAGES, model=CHAT_MODEL, max_tokens=64, stream=True, stream_options={"include_usage": True}))
    theirs_text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    theirs_usage = next((c.usage for c in chunks if c.usage), None)
    ours = list(ours_chat(loopback.url).stream_chat(as_chat_messages(MESSAGES)))
    ours_usage = next((c.additional_kwargs for c in ours if "total_tokens" in c.additional_kwargs), None)
    assert "".join(c.delta for c in ours) == theirs_text and theirs_text.startswith("Echo from")
    if fault == "no_usage":
        assert theirs_usage is None and ours_usage is None
    else:
        assert ours_usage is not None and theirs_usage is not None
        assert {k: ours_usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {
            "prompt_tokens": theirs_usage.prompt_tokens,
            "completion_tokens": theirs_usage.completion_tokens,
            "total_tokens": theirs_usage.total_tokens,
        }
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_an_error_event_inside_a_stream_raises_the_same_exception(loopback, official) -> None:
    loopback.add_fault("chat", "stream_error_after_token")
    client = official()
    with pytest.raises(Exception) as theirs:  # the type is what is compared
        list(client.chat_completion(MESSAGES, model=CHAT_MODEL, stream=True))
    with pytest.raises(Exception) as ours:
        list(ours_chat(loopback.url).stream_chat(as_chat_messages(MESSAGES)))
    assert type(ours.value) is type(theirs.value) and "generation failed" in str(ours.value)


@pytest.mark.parametrize(
    ("model", "status", "message"),
    [
        ("someone/not-served", 400, "not supported by any provider you have enabled"),  # OpenAI-style {"error": {"message"}}
        (CHAT_MODEL, 401, "Invalid credentials in Authorization header"),
    ],
    ids=["400 model not served", "401 bad token"],
)
def test_error_replies_raise_the_same_http_error_and_ours_reads_the_openai_message(loopback, official, model, status, message) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    token = FAKE_TOKEN if status != 401 else "hf_wrong_token_for_this_fake"
    client = official()
    client.token = token
    with pytest.raises(HfHubHTTPError) as theirs:
        client.chat_completion(MESSAGES[1:], model=model)
    llm = HFChatLLM(model_name=model, token=token, base_url=loopback.url, timeout=5)
    with pytest.raises(HfHubHTTPError) as ours:
        llm.chat(as_chat_messages(MESSAGES[1:]))
    assert ours.value.response.status_code == theirs.value.response.status_code == status
    assert message in str(theirs.value) and message in str(ours.value)
    # InferenceClient keeps an OpenAI-style body's message as a dict repr; ours reads the message itself
    # (backend_errors.redacted_errors), so "skipped:" lines and notices quote the server's words.
    assert message in ours.value.server_message and "{" not in ours.value.server_message
    if status == 400:
        assert "'message':" in theirs.value.server_message
