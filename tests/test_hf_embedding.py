"""HFEmbedding against the loopback server: one POST per batch (at most 32 texts), pooling, cache, retries, 413 and 401."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from integrations.adapters.hf_embedding import HFEmbedding
from integrations.backend_errors import RetryExhaustedError
from tests.conftest_hf import FAKE_TOKEN
from tests.loopback_server import hashed_embedding, hashed_states

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = [f"Passage {i}: the widget timeout flag sets how long to wait for reply number {i}." for i in range(70)]
DOCS = {
    "install": "Install the widget with pip install widget. The installer checks the Python version first.",
    "timeout": "The --timeout flag sets how long the widget waits for a reply, in seconds.",
    "cache": "The widget cache lives in ~/.cache/widget. Delete that folder to clear the cache.",
    "led": "The status LED glows green when ready and blinks red after an error.",
}


def make(url: str, tmp_path: Path | None = None, **kwargs) -> HFEmbedding:
    cache = str(tmp_path / "cache.sqlite") if tmp_path else None
    return HFEmbedding(
        model_name=kwargs.pop("model_name", MODEL),
        token=kwargs.pop("token", FAKE_TOKEN),
        base_url=url,
        timeout=2.0,
        cache_path=cache,
        **kwargs,
    )


def test_one_post_per_batch_with_unit_vectors(loopback) -> None:
    embed = make(loopback.url, embed_batch_size=32)
    vectors = embed.get_text_embedding_batch(TEXTS)
    requests = loopback.requests("embed")
    assert [len(r.body["inputs"]) for r in requests] == [32, 32, 6]
    assert requests[0].path == f"/hf-inference/models/{MODEL}/pipeline/feature-extraction"
    assert requests[0].headers["authorization"] == f"Bearer {FAKE_TOKEN}"
    assert np.allclose(np.linalg.norm(np.asarray(vectors), axis=1), 1.0, atol=1e-4)


@pytest.mark.parametrize("token_level", [False, True])
def test_vectors_are_what_the_server_computed_pooled_and_normalised(loopback, token_level) -> None:
    """The fake's model is a word-hashing function, not the app's local model: a client that pools or normalises wrongly fails."""
    if token_level:
        loopback.state.token_level_models.add(MODEL)
    texts = list(DOCS.values())
    remote = np.asarray(make(loopback.url).get_text_embedding_batch(texts))
    if token_level:
        expected = np.asarray([hashed_states(t).mean(axis=0) for t in texts])
    else:
        expected = np.asarray([hashed_embedding(t) for t in texts])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(remote, expected, atol=1e-5)


def test_more_than_32_texts_never_go_in_one_request_even_when_configured(loopback) -> None:
    vectors = make(loopback.url, embed_batch_size=100).get_text_embedding_batch(TEXTS)
    assert len(vectors) == 70 and [len(r.body["inputs"]) for r in loopback.requests("embed")] == [32, 32, 6]


def test_a_413_splits_the_batch_and_sends_the_halves(loopback, monkeypatch) -> None:
    """A server with a smaller max_client_batch_size than 32 answers 413: the batch is halved until it fits."""
    monkeypatch.setattr("tests.loopback_server.MAX_CLIENT_BATCH", 10)
    vectors = make(loopback.url).get_text_embedding_batch(TEXTS[:32])
    assert len(vectors) == 32 and np.allclose(vectors[5], make(loopback.url).get_text_embedding(TEXTS[5]), atol=1e-6)
    sizes = [len(r.body["inputs"]) for r in loopback.requests("embed")][:-1]
    assert sizes == [32, 16, 8, 8, 16, 8, 8]


def test_without_a_valid_token_the_server_says_401_and_nothing_is_embedded(loopback) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    from integrations.backend_errors import BackendAuthError

    for token in (None, "hf_wrong_token"):
        with pytest.raises(BackendAuthError, match="HTTP 401: set HF_TOKEN") as caught:
            make(loopback.url, token=token).get_text_embedding("text")
        assert isinstance(caught.value.__cause__, HfHubHTTPError) and caught.value.__cause__.response.status_code == 401


def test_cache_means_no_text_is_paid_twice(loopback, tmp_path) -> None:
    embed = make(loopback.url, tmp_path)
    first = embed.get_text_embedding_batch(TEXTS[:10])
    embed.get_query_embedding("how long does the widget wait?")
    sent = len(loopback.requests("embed"))
    assert sent == 2
    again = make(loopback.url, tmp_path)  # a new process would open the same file
    assert np.allclose(again.get_text_embedding_batch(TEXTS[:10]), first, atol=1e-6)
    again.get_query_embedding("how long does the widget wait?")
    assert len(loopback.requests("embed")) == sent and again.stats["cache_hits"] == 11
    mixed = again.get_text_embedding_batch(TEXTS[5:15])  # only the 5 new texts are sent
    assert len(mixed) == 10 and len(loopback.requests("embed")[-1].body["inputs"]) == 5
    make(loopback.url, tmp_path, model_name="other/model").get_text_embedding_batch(TEXTS[:2])
    assert loopback.requests("embed")[-1].model == "other/model"  # the cache is keyed by model too


def test_keep_alive_server_serves_every_call_and_async_paths_work(loopback) -> None:
    embed = make(loopback.url)
    for i in range(8):  # the stock class fails every other call here ("Event loop is closed")
        assert len(embed.get_query_embedding(f"question {i}")) == 384

    async def both():
        return await embed.aget_query_embedding("q async"), await embed.aget_text_embedding_batch(TEXTS[:3])

    for _ in range(2):
        query, texts = asyncio.run(both())
        assert len(query) == 384 and len(texts) == 3


def test_loading_model_is_waited_for_within_the_deadline(loopback) -> None:
    loopback.add_fault("embed", kind="503", estimated_time=0.2, times=1)
    assert len(make(loopback.url).get_text_embedding("text")) == 384
    assert len(loopback.requests("embed")) == 2


def test_long_rate_limit_gives_up_with_a_clear_error(loopback) -> None:
    loopback.add_fault("embed", kind="429", retry_after=600)
    with pytest.raises(RetryExhaustedError, match="429"):
        make(loopback.url, deadline_s=5).get_text_embedding("text")


def test_without_a_token_no_authorization_is_sent_not_even_a_saved_one(loopback, saved_token) -> None:
    from integrations.backend_errors import BackendAuthError

    with pytest.raises(BackendAuthError):
        make(loopback.url, token=None).get_text_embedding("text")
    [request] = loopback.requests("embed")
    assert "authorization" not in request.headers
    assert saved_token not in str(request.headers)
