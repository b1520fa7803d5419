"""Several queries embedded in one model call: a question and its parts cost one ONNX run or one API request.

LlamaIndex's ``BaseEmbedding`` embeds queries one at a time. Embedders that can
do better mix in :class:`QueryBatchEmbedding` and implement
``_get_query_embeddings``; :func:`embed_queries` uses it when present and falls
back to one ``get_query_embedding`` call per query for any other embedder.
"""

from __future__ import annotations

from collections.abc import Sequence

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent, EmbeddingStartEvent

dispatcher = get_dispatcher(__name__)


class QueryBatchEmbedding:
    """Mixin for a ``BaseEmbedding``: ``get_query_embeddings(queries)`` in one call, with the usual instrumentation events."""

    def _get_query_embeddings(self, queries: list[str]) -> list[Embedding]:
        raise NotImplementedError

    def get_query_embeddings(self, queries: Sequence[str]) -> list[Embedding]:
        queries = list(queries)
        if not queries:
            return []
        dispatcher.event(EmbeddingStartEvent(model_dict=self.to_payload()))  # type: ignore[attr-defined]
        vectors = self._get_query_embeddings(queries)
        dispatcher.event(EmbeddingEndEvent(chunks=queries, embeddings=vectors))
        return vectors


def embed_queries(embed_model: BaseEmbedding, queries: Sequence[str]) -> list[Embedding]:
    """One vector per query, in one call when the embedder supports it."""
    if isinstance(embed_model, QueryBatchEmbedding):
        return embed_model.get_query_embeddings(queries)
    return [embed_model.get_query_embedding(q) for q in queries]
