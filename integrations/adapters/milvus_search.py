"""The one adapter between retrieval and the Milvus client: batched dense and BM25 searches, texts by primary key.

LlamaIndex's ``MilvusVectorStore.query`` runs one query per request and returns
no per-hit BM25 score, while the hybrid retriever needs both rankings with their
scores (and sends several BM25 queries in one request for the missing-name
probe). So the searches go through ``store.client`` here, and nothing else in
retrieval touches the client. Nodes are rebuilt with LlamaIndex's public
``metadata_dict_to_node`` from the ``_node_content`` column the store writes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.utils import metadata_dict_to_node

from integrations.node_ids import files_filter
from integrations.pending_vectors import HAS_VECTOR

DENSE_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
#: The columns a node is rebuilt from (LlamaIndex's serialised node, its type, and the text column).
NODE_FIELDS = ["_node_content", "_node_type", "text"]


class Hit(NamedTuple):
    """One search result: chunk id, score as Milvus reports it, and the row's node columns."""

    id: str
    score: float
    entity: dict[str, Any]


def hit_node(entity: dict[str, Any]) -> BaseNode:
    """The node a row holds, as the vector store itself rebuilds it (the text column wins over the serialised text)."""
    return metadata_dict_to_node(entity, text=entity.get("text"))


def _filter(field: str, file_ids: list[str] | None) -> str:
    """Within ``file_ids`` if set; a dense search also skips chunks still waiting for their vector (pending_vectors)."""
    parts = [files_filter(file_ids)] if file_ids is not None else []
    if field == DENSE_FIELD:
        parts.append(HAS_VECTOR)
    return " and ".join(f"({part})" for part in parts)


class MilvusSearch:
    """Searches and fetches by id on the collection of a ``MilvusVectorStore`` (Milvus Lite, server or cluster)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def search(self, queries: list[Any], field: str, metric: str, limit: int, file_ids: list[str] | None = None) -> list[list[Hit]]:
        """One request for all queries: per query, its hits best first, within ``file_ids`` when given."""
        if limit <= 0 or not queries:
            return [[] for _ in queries]
        result = self.store.client.search(
            collection_name=self.store.collection_name,
            data=queries,
            anns_field=field,
            limit=limit,
            filter=_filter(field, file_ids),
            output_fields=NODE_FIELDS,
            search_params={"metric_type": metric},
        )
        return [[Hit(hit["id"], float(hit["distance"]), hit["entity"]) for hit in hits] for hits in result]

    def chunks(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """Text and section path of these chunks by primary key (absent ids are chunks that do not exist)."""
        if not ids:
            return {}
        rows = self.store.client.get(collection_name=self.store.collection_name, ids=ids, output_fields=["text", "section"])
        return {row["id"]: (str(row.get("text") or ""), str(row.get("section") or "")) for row in rows}
