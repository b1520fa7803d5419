"""Chunks stored before their meaning vector: searchable by keywords at once, embedded in a second pass (docs/ingestion.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.schema import BaseNode, TransformComponent

from integrations.adapters.milvus_store import PENDING_KEY, MilvusStore, hit_node


class PlaceholderVectors(TransformComponent):
    """The first pass's embedding step: a zero vector and the pending mark, hidden from the embedder and the LLM."""

    dim: int = Field(description="Dimension of the store's dense vectors.")

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        zero = [0.0] * self.dim
        for node in nodes:
            node.embedding = zero
            node.metadata[PENDING_KEY] = True
            for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
                if PENDING_KEY not in excluded:
                    excluded.append(PENDING_KEY)
        return nodes


def _restored(row: dict) -> BaseNode:
    """A stored row as the node a one-pass ingest wrote, without the pending mark."""
    node = hit_node(row)
    node.metadata.pop(PENDING_KEY, None)
    for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
        if PENDING_KEY in excluded:
            excluded.remove(PENDING_KEY)
    return node


def embed_pending(
    store: MilvusStore,
    embed: Callable[[list[BaseNode]], Sequence[BaseNode]],
    batch: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Embed every row still marked pending, ``batch`` rows per read and upsert; returns how many were embedded."""
    total, done = store.pending_count(), 0
    if progress and total:
        progress(0, total)
    for _ in range(0, total, batch):  # each step's upsert clears the marks the next step's read would find
        rows = store.pending_rows(batch)
        if not rows:
            break
        nodes = list(embed([_restored(row) for row in rows]))
        store.add(nodes)  # upsert under the same ids: the mark goes with the placeholder
        done += len(nodes)
        if progress:
            progress(done, total)
    return done
