"""Cross-encoder reranking through the Hugging Face Inference API.

All (question, passage) pairs of a question go in ONE raw POST of
``{"inputs": [{"text": q, "text_pair": d}, ...]}`` to ``{base_url}/hf-inference/models/{id}``
(``InferenceClient.text_classification`` keeps only the first result of a batch).
Scores are normalised to 0..1 (sigmoid of logits). Cost controls: at most
``max_candidates`` pairs per question, a score cache keyed by (model, question,
node hash), and no call at all when the retriever returned ≤ ``top_n`` nodes.
When the API fails the fused order is kept, the question still gets its answer,
and :attr:`HFCrossEncoderRerank.last_notice` says what happened (the query
engine copies it into ``response.metadata["notices"]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections import OrderedDict
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import SecretStr

from integrations.backend_errors import BackendUnavailableError
from integrations.hf_http import DEFAULT_HF_BASE_URL, hf_headers, model_url, post_json, secret_value
from integrations.usage_meter import UsageMeter, estimate_tokens, metered

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)


def _rerank_errors() -> tuple[type[BaseException], ...]:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

    return (HfHubHTTPError, InferenceTimeoutError, httpx2.HTTPError, BackendUnavailableError, ConnectionError, TimeoutError)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class HFCrossEncoderRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes with a cross-encoder served by the HF Inference API."""

    model: str = Field(default="cross-encoder/ms-marco-MiniLM-L6-v2", description="Cross-encoder model id.")
    base_url: str = Field(
        default=DEFAULT_HF_BASE_URL, description="Router base URL; requests go to {base_url}/hf-inference/models/{model}."
    )
    top_n: int = Field(default=5, ge=1, description="Nodes returned after reranking.")
    max_candidates: int = Field(default=20, ge=1, description="Most nodes scored per question (the rest are dropped).")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of the one scoring request per question.")
    max_chars: int = Field(default=2000, ge=100, description="Passage characters sent per pair (the model truncates at 512 tokens anyway).")
    function_to_apply: str = Field(
        default="sigmoid", description="Score function requested from the server; logits are squashed client-side too."
    )
    positive_label: str = Field(default="LABEL_1", description="Label scored when the model returns several labels per pair.")
    cache_size: int = Field(default=10_000, ge=0, description="Cached (model, question, node) scores kept in memory; 0 disables the cache.")

    _token: SecretStr | None = PrivateAttr(default=None)
    _cache: OrderedDict[str, float] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _local: threading.local = PrivateAttr(default_factory=threading.local)
    _requests: int = PrivateAttr(default=0)
    _meter: UsageMeter | None = PrivateAttr(default=None)

    def __init__(self, *, token: SecretStr | str | None = None, meter: UsageMeter | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        value = secret_value(token)
        self._token = SecretStr(value) if value else None
        self._meter = meter

    @classmethod
    def class_name(cls) -> str:
        return "HFCrossEncoderRerank"

    @property
    def last_notice(self) -> str | None:
        """Why the last question in this thread kept the fused order (None when reranking worked or was skipped)."""
        return getattr(self._local, "notice", None)

    @property
    def requests_sent(self) -> int:
        return self._requests

    def _key(self, query: str, node_hash: str) -> str:
        return hashlib.sha256(f"{self.model}\x00{query}\x00{node_hash}".encode()).hexdigest()

    def _score_of(self, item: Any) -> float:
        """One pair's score from ``{"label","score"}`` or a list of them."""
        if isinstance(item, dict):
            return float(item["score"])
        if isinstance(item, list) and item:
            if len(item) == 1:
                return float(item[0]["score"])
            by_label = {entry["label"]: float(entry["score"]) for entry in item}
            if self.positive_label in by_label:
                return by_label[self.positive_label]
        raise BackendUnavailableError(f"{self.model} returned an unexpected score item: {json.dumps(item)[:120]}")

    def _score(self, query: str, texts: list[str]) -> list[float]:
        body: dict[str, Any] = {
            "inputs": [{"text": query, "text_pair": text[: self.max_chars]} for text in texts],
            "parameters": {"function_to_apply": self.function_to_apply},
        }
        with self._lock:
            self._requests += 1
        with metered(self._meter, "rerank", self.model, "hf-inference", calls=1) as usage:
            out = post_json(model_url(self.base_url, self.model), body, headers=hf_headers(self._token), timeout=self.timeout_s)
            if self._meter is not None:
                usage.tokens_in, usage.estimated = sum(estimate_tokens(query) + estimate_tokens(t) for t in texts), True
        if not isinstance(out, list) or len(out) != len(texts):
            raise BackendUnavailableError(f"{self.model} returned {type(out).__name__} for {len(texts)} pairs; expected one score per pair")
        scores = [self._score_of(item) for item in out]
        if any(s < 0.0 or s > 1.0 for s in scores):  # logits: squash all of them
            scores = [_sigmoid(s) for s in scores]
        return scores

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError("HFCrossEncoderRerank needs the question: pass query_bundle or query_str")
        self._local.notice = None
        if len(nodes) <= self.top_n:
            return [NodeWithScore(node=n.node, score=n.score) for n in nodes]
        query = query_bundle.query_str
        limit = self.max_candidates
        if self._meter is not None and self._meter.state() == "degraded":  # spend near the cap: score fewer pairs
            limit = max(self.top_n, self.max_candidates // 2)
        candidates = nodes[:limit]
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=candidates, top_n=self.top_n, model_name=self.model))
        keys = [self._key(query, n.node.hash) for n in candidates]
        with self._lock:
            scores: list[float | None] = [self._cache.get(k) for k in keys]
        todo = [i for i, s in enumerate(scores) if s is None]
        if todo:
            texts = [candidates[i].node.get_content(metadata_mode=MetadataMode.EMBED) for i in todo]
            try:
                fresh = self._score(query, texts)
            except _rerank_errors() as exc:
                self._local.notice = f"Reranking with {self.model} failed ({_describe(exc)}); the fused retrieval order was kept."
                logger.info("%s", self._local.notice)  # also in the response notices
                kept = [NodeWithScore(node=n.node, score=n.score) for n in candidates[: self.top_n]]
                dispatcher.event(ReRankEndEvent(nodes=kept))
                return kept
            with self._lock:
                for i, score in zip(todo, fresh, strict=True):
                    scores[i] = score
                    if self.cache_size:
                        self._cache[keys[i]] = score
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        order = sorted(range(len(candidates)), key=lambda i: -float(scores[i] or 0.0))  # stable: ties keep fused order
        reranked = [NodeWithScore(node=candidates[i].node, score=scores[i]) for i in order[: self.top_n]]
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked


def _describe(exc: BaseException) -> str:
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"
