"""A second ranking stage without a cross-encoder: the question's meaning over whole passages (docs/design-notes.md)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from integrations.adapters.milvus_store import MilvusStore
from integrations.node_ids import chunk_id, parse_chunk_id

logger = logging.getLogger(__name__)


def passage_chunk_ids(node_id: str, chunks_per_piece: int) -> list[str]:
    """Ids of the chunks a passage "<first chunk id>..<last chunk id>" (hybrid_retriever) may hold, in file order."""
    first, _, last = node_id.partition("..")
    a, b = parse_chunk_id(first), parse_chunk_id(last or first)
    if a is None or b is None or a[0] != b[0]:
        return [node_id]
    file, (p1, i1), (p2, i2) = a[0], a[1:], b[1:]
    ids = []
    for piece in range(p1, p2 + 1):
        start = i1 if piece == p1 else 0
        stop = i2 + 1 if piece == p2 else max(chunks_per_piece, start + 1)
        ids.extend(chunk_id(file, piece, k) for k in range(start, stop))
    return ids


class MeaningRerank(BaseNodePostprocessor):
    """Reorder retrieved passages by RRF of their retrieval order and the question's cosine over their chunks."""

    top_n: int = Field(default=5, ge=1, description="Passages returned.")
    weight: float = Field(default=0.0, ge=0.0, description="Weight of the meaning ranking when the searches disagree (0: order kept).")
    rrf_k: int = Field(default=10, ge=1, description="Reciprocal rank fusion constant.")
    chunks_per_piece: int = Field(default=8, ge=1, description="Chunks looked up per piece of a passage spanning pieces.")

    _store: MilvusStore = PrivateAttr()
    _embed_model: BaseEmbedding = PrivateAttr()

    def __init__(self, store: MilvusStore, embed_model: BaseEmbedding, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store = store
        self._embed_model = embed_model

    @classmethod
    def class_name(cls) -> str:
        return "MeaningRerank"

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        if query_bundle is None or len(nodes) <= 1 or self.weight <= 0 or self._agree(nodes[0]):
            return nodes[: self.top_n]
        cosines = self._cosines(nodes, query_bundle)
        if cosines is None:
            return nodes[: self.top_n]
        by_meaning = {i: rank for rank, i in enumerate(sorted(range(len(nodes)), key=lambda i: -cosines[i]), start=1)}
        fused = [1 / (self.rrf_k + i + 1) + self.weight / (self.rrf_k + by_meaning[i]) for i in range(len(nodes))]
        order = sorted(range(len(nodes)), key=lambda i: -fused[i])
        return [NodeWithScore(node=nodes[i].node, score=fused[i]) for i in order[: self.top_n]]

    @staticmethod
    def _agree(top: NodeWithScore) -> bool:
        """Both searches found the first passage (the retriever records each search's best score per passage)."""
        meta = top.node.metadata
        return meta.get("dense_score") is not None and meta.get("bm25_score") is not None

    def _cosines(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> list[float] | None:
        """Per passage, the question's best cosine over its chunks' stored vectors (None when the store cannot say)."""
        vector = query_bundle.embedding or self._embed_model.get_query_embedding(query_bundle.query_str)
        ids = [passage_chunk_ids(n.node.node_id, self.chunks_per_piece) for n in nodes]
        found = self._store.vectors(sorted({i for group in ids for i in group}))
        vectors = {i: np.asarray(v, dtype=np.float32) for i, v in found.items()}
        if not vectors or not all(vector.any() for vector in vectors.values()):
            return None  # some chunks still wait for their vector (integrations.pending_vectors): no meaning order yet
        question = np.asarray(vector, dtype=np.float32)
        return [max((float(vectors[i] @ question) for i in group if i in vectors), default=-1.0) for group in ids]
