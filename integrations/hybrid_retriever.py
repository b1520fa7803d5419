"""Dense + BM25 retrieval from one Milvus collection, fused with weighted reciprocal rank fusion.

Milvus computes both rankings (the dense vector index and its built-in BM25
function), so the same retriever serves Milvus Lite and a Milvus cluster. The
fusion happens here rather than in Milvus' RRFRanker so that each result keeps
its dense cosine similarity, which the answer step uses to detect weak evidence.
"""

from __future__ import annotations

import logging
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle

from integrations.keyword_text import KEYWORD_FIELD, keyword_text

logger = logging.getLogger(__name__)

DENSE_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
NODE_FIELDS = ["_node_content", "_node_type", "text"]
SCORE_KEYS = ["dense_score", "bm25_score"]


def sources_filter(sources: list[str] | None) -> str:
    if not sources:
        return ""
    import json

    return f"source in [{', '.join(json.dumps(s) for s in sources)}]"


class MilvusHybridRetriever(BaseRetriever):
    """Retrieve chunks by dense similarity and BM25, fused by weighted RRF.

    Each returned node carries ``dense_score`` (cosine, or None when only BM25
    found it) and ``bm25_score`` in its metadata, hidden from the LLM and embedder.
    """

    def __init__(
        self,
        vector_store: Any,
        embed_model: BaseEmbedding,
        top_k: int = 5,
        dense_top_k: int = 20,
        sparse_top_k: int = 20,
        rrf_k: int = 60,
        dense_weight: float = 1.0,
        sparse_weight: float = 1.0,
        sources: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self._store = vector_store
        self._embed_model = embed_model
        self.top_k = top_k
        self.dense_top_k = dense_top_k
        self.sparse_top_k = sparse_top_k
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.sparse_weight = sparse_weight
        self.sources = sources
        super().__init__(**kwargs)

    def _search(self, data: Any, field: str, metric: str, limit: int, expr: str) -> list[tuple[Any, float, str]]:
        if limit <= 0:
            return []
        result = self._store.client.search(
            collection_name=self._store.collection_name,
            data=[data],
            anns_field=field,
            limit=limit,
            filter=expr,
            output_fields=NODE_FIELDS,
            search_params={"metric_type": metric},
        )
        nodes, scores, ids = self._store._parse_from_milvus_results(result)
        return list(zip(nodes, scores, ids, strict=True))

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        embedding = query_bundle.embedding or self._embed_model.get_query_embedding(query_bundle.query_str)
        expr = sources_filter(self.sources)
        dense = self._search(embedding, DENSE_FIELD, "IP", self.dense_top_k if self.dense_weight > 0 else 0, expr)
        terms = keyword_text(query_bundle.query_str) or query_bundle.query_str
        sparse = self._search(terms, SPARSE_FIELD, "BM25", self.sparse_top_k if self.sparse_weight > 0 else 0, expr)

        fused: dict[str, float] = {}
        nodes: dict[str, Any] = {}
        dense_scores: dict[str, float] = {}
        bm25_scores: dict[str, float] = {}
        for weight, hits, scores in ((self.dense_weight, dense, dense_scores), (self.sparse_weight, sparse, bm25_scores)):
            for rank, (node, score, node_id) in enumerate(hits, start=1):
                fused[node_id] = fused.get(node_id, 0.0) + weight / (self.rrf_k + rank)
                nodes.setdefault(node_id, node)
                scores[node_id] = float(score)
        ranked = sorted(fused, key=fused.__getitem__, reverse=True)[: self.top_k]
        results = []
        for node_id in ranked:
            node = nodes[node_id]
            node.metadata.pop(KEYWORD_FIELD, None)
            node.metadata["dense_score"] = dense_scores.get(node_id)
            node.metadata["bm25_score"] = bm25_scores.get(node_id)
            for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
                keys.extend(k for k in SCORE_KEYS if k not in keys)
            results.append(NodeWithScore(node=node, score=fused[node_id]))
        return results
