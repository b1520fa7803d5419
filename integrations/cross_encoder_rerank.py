"""What every cross-encoder reranker does with a question's nodes, whoever computes the scores (:meth:`_score`).

At most ``max_candidates`` nodes, cached scores, no scoring with ``top_n`` nodes or fewer; a failure keeps the fused
order with a notice in the question context."""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections import OrderedDict

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from integrations.question_context import current_question

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class CrossEncoderRerank(BaseNodePostprocessor):
    """Rerank retrieved nodes by a cross-encoder's score of each (question, passage) pair; subclasses provide the scores."""

    model: str = Field(default="cross-encoder/ms-marco-MiniLM-L6-v2", description="Cross-encoder model (names it in notices and events).")
    top_n: int = Field(default=5, ge=1, description="Nodes returned after reranking.")
    max_candidates: int = Field(default=20, ge=1, description="Most nodes scored per question (the rest are dropped).")
    max_chars: int = Field(default=2000, ge=100, description="Passage characters scored per pair (models truncate at 512 tokens anyway).")
    cache_size: int = Field(default=10_000, ge=0, description="Cached (model, question, node) scores kept in memory; 0 disables the cache.")

    _cache: OrderedDict[str, float] = PrivateAttr(default_factory=OrderedDict)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def _score(self, query: str, texts: list[str]) -> list[float]:
        """One score in 0..1 per passage, higher for a better match."""
        raise NotImplementedError

    def _failures(self) -> tuple[type[BaseException], ...]:
        """The errors of :meth:`_score` after which the fused order is kept."""
        raise NotImplementedError

    def _describe(self, exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"

    def _limit(self) -> int:
        return self.max_candidates

    def _key(self, query: str, node_hash: str) -> str:
        return hashlib.sha256(f"{self.model}\x00{query}\x00{node_hash}".encode()).hexdigest()

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None:
            raise ValueError(f"{self.class_name()} needs the question: pass query_bundle or query_str")
        if len(nodes) <= self.top_n:
            return [NodeWithScore(node=n.node, score=n.score) for n in nodes]
        query = query_bundle.query_str
        candidates = nodes[: self._limit()]
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=candidates, top_n=self.top_n, model_name=self.model))
        keys = [self._key(query, n.node.hash) for n in candidates]
        with self._lock:
            scores: list[float | None] = [self._cache.get(k) for k in keys]
        todo = [i for i, s in enumerate(scores) if s is None]
        if todo:
            texts = [candidates[i].node.get_content(metadata_mode=MetadataMode.EMBED)[: self.max_chars] for i in todo]
            try:
                fresh = self._score(query, texts)
            except self._failures() as exc:
                notice = f"Reranking with {self.model} failed ({self._describe(exc)}); the fused retrieval order was kept."
                current_question().notice(notice)
                logger.info("%s", notice)  # also in the response notices
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
