"""Embeddings through the Hugging Face Inference API: one synchronous batched POST per batch, cached (docs/design-notes.md)."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.embeddings.huggingface_api import HuggingFaceInferenceAPIEmbedding
from llama_index.embeddings.huggingface_api.pooling import Pooling
from llama_index.utils.huggingface import format_query, format_text
from pydantic import SecretStr

from integrations.adapters.embedding_cache import EmbeddingCache
from integrations.adapters.hf_http import (
    DEFAULT_HF_BASE_URL,
    MAX_CLIENT_BATCH,
    feature_extraction_url,
    hf_headers,
    post_json,
    secret_value,
    with_retries,
)
from integrations.backend_errors import BackendAuthError, BackendUnavailableError
from integrations.deadline import current_deadline
from integrations.redaction import redacted_errors
from integrations.usage_meter import UsageMeter, estimate_tokens, metered

logger = logging.getLogger(__name__)


class HFEmbedding(HuggingFaceInferenceAPIEmbedding):
    """Sentence embeddings from the HF Inference API (default sentence-transformers/all-MiniLM-L6-v2)."""

    base_url: str = Field(default=DEFAULT_HF_BASE_URL, description="Router base URL; the feature-extraction route is built from it.")
    embed_batch_size: int = Field(
        default=MAX_CLIENT_BATCH, gt=0, le=2048, description="Texts per embedding call; each request carries at most 32 of them."
    )
    pooling: Pooling | None = Field(
        default=Pooling.MEAN, description="Pooling of token-level outputs (sentence-transformers models use mean)."
    )
    dimension: int = Field(default=384, ge=1, description="Length of the model's vectors (all-MiniLM-L6-v2: 384): the index's.")
    normalize: bool = Field(default=True, description="L2-normalise vectors so inner product equals cosine.")
    truncate: bool = Field(default=True, description="Ask the server to truncate texts longer than the model's limit.")
    max_retries: int = Field(
        default=2, ge=0, description="Retries after a 429 or 503-loading reply, each only if its wait fits the deadline."
    )
    deadline_s: float = Field(default=120.0, gt=0, description="Time budget of one batch (retries included) outside a question deadline.")
    cache_path: str | None = Field(default=None, description="SQLite file of the embedding cache; None disables caching.")

    _token: SecretStr | None = PrivateAttr(default=None)
    _cache: EmbeddingCache | None = PrivateAttr(default=None)
    _stats_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _stats: dict[str, int] = PrivateAttr(default_factory=dict)
    _meter: UsageMeter | None = PrivateAttr(default=None)

    def __init__(
        self, *, model_name: str, token: SecretStr | str | None, timeout: float = 30.0, meter: UsageMeter | None = None, **kwargs: Any
    ) -> None:
        if timeout is None or timeout <= 0:
            raise ValueError("HFEmbedding needs a positive timeout in seconds (the stock default None waits forever)")
        # token=None in the stock field: the real token stays private and is only put in request headers.
        super().__init__(model_name=model_name, token=None, timeout=timeout, **kwargs)
        value = secret_value(token)
        self._token = SecretStr(value) if value else None
        self._cache = EmbeddingCache(self.cache_path) if self.cache_path else None
        self._stats = {"requests": 0, "texts_sent": 0, "cache_hits": 0, "duplicates": 0}
        self._meter = meter

    @classmethod
    def class_name(cls) -> str:
        return "HFEmbedding"

    @property
    def stats(self) -> dict[str, int]:
        """Requests sent, texts sent, texts served from the cache and repeated texts sent once, since construction."""
        with self._stats_lock:
            return dict(self._stats)

    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for key, value in deltas.items():
                self._stats[key] += value

    def _vector(self, item: Any) -> list[float]:
        array = np.asarray(item, dtype=np.float32)
        if array.ndim == 2:  # token-level output [tokens, dim]
            if self.pooling is None:
                raise ValueError(f"{self.model_name} returned token-level vectors: set pooling (mean for sentence-transformers models)")
            array = self.pooling(array)
        if array.ndim != 1 or array.size == 0:
            raise BackendUnavailableError(f"{self.model_name} returned vectors of unexpected shape {array.shape}")
        if self.normalize:
            array = array / max(float(np.linalg.norm(array)), 1e-12)
        return array.tolist()

    def _request(self, texts: list[str]) -> list[list[float]]:
        from huggingface_hub.errors import HfHubHTTPError

        with redacted_errors(self._token.get_secret_value() if self._token else None):
            try:
                return [v for start in range(0, len(texts), MAX_CLIENT_BATCH) for v in self._post(texts[start : start + MAX_CLIENT_BATCH])]
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else None
                if status not in (401, 403):
                    raise
                raise BackendAuthError(
                    f"Hugging Face embeddings ({self.model_name} at {self.base_url}) refused the token with HTTP {status}: "
                    "set HF_TOKEN to a valid token with the 'Make calls to Inference Providers' permission "
                    "(check it with `python -m app --profile hf_api doctor`), or use the local profile"
                ) from exc

    def _post(self, texts: list[str]) -> list[list[float]]:
        """One request for ``texts``; a 413 (batch too large for this server) sends each half on its own."""
        from huggingface_hub.errors import HfHubHTTPError

        # The route and body InferenceClient.feature_extraction sends (tests/test_hf_client_parity.py). It first asks the
        # Hub API for the model's task; this does not: `doctor` checks the model, and a wrong one fails this call anyway.
        url = feature_extraction_url(self.base_url, self.model_name)
        body = {"inputs": texts, "truncate": self.truncate}
        headers = hf_headers(self._token)

        def attempt(timeout: float) -> Any:
            self._count(requests=1, texts_sent=len(texts))
            return post_json(url, body, headers=headers, timeout=timeout)

        try:
            with metered(self._meter, "embedding", self.model_name, "hf-inference", calls=1) as usage:
                out = with_retries(
                    attempt,
                    what=f"embeddings {self.model_name}",
                    deadline=current_deadline(self.deadline_s),
                    timeout_s=self.timeout,
                    max_retries=self.max_retries,
                )
                if self._meter is not None:
                    usage.tokens_in, usage.estimated = sum(estimate_tokens(t) for t in texts), True
        except HfHubHTTPError as exc:
            if exc.response is None or exc.response.status_code != 413 or len(texts) < 2:
                raise
            half = len(texts) // 2
            logger.info("embeddings %s: HTTP 413 for %d texts; sending halves of %d", self.model_name, len(texts), half)
            return self._post(texts[:half]) + self._post(texts[half:])
        if not isinstance(out, list) or len(out) != len(texts):
            raise BackendUnavailableError(
                f"{self.model_name} returned {type(out).__name__} for {len(texts)} texts; expected one vector per text"
            )
        return [self._vector(item) for item in out]

    def _embed(self, texts: list[str]) -> list[Embedding]:
        if not texts:
            return []
        cached = self._cache.get_many(self.model_name, texts) if self._cache is not None else [None] * len(texts)
        missing = sorted({t for t, v in zip(texts, cached, strict=True) if v is None})
        misses = sum(v is None for v in cached)
        self._count(cache_hits=len(texts) - misses, duplicates=misses - len(missing))
        fresh: dict[str, list[float]] = {}
        if missing:
            vectors = self._request(missing)
            fresh = dict(zip(missing, vectors, strict=True))
            if self._cache is not None:
                self._cache.put_many(self.model_name, missing, vectors)
        return [v if v is not None else fresh[t] for t, v in zip(texts, cached, strict=True)]

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._embed([format_query(query, self.model_name, self.query_instruction)])[0]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._embed([format_text(text, self.model_name, self.text_instruction)])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._embed([format_text(t, self.model_name, self.text_instruction) for t in texts])

    # The stock async paths open event loops per call and break on keep-alive servers: use threads.
    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
