"""Only committed files reach an answer, also while an ingest writes to the index (docs/scaling.md)."""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle

from app.ingest_progress import duration
from app.manifest import Manifest, state_file
from app.writer_lock import Writer, current_writer
from integrations import node_ids
from integrations.adapters.milvus_store import MilvusStore
from integrations.question_context import current_question


def _file_of(hit: NodeWithScore) -> str:
    piece = node_ids.parse_piece_id(hit.node.ref_doc_id or "")
    chunk = node_ids.parse_chunk_id(hit.node.node_id)
    return piece[0] if piece else chunk[0] if chunk else ""


class CommittedRetriever(BaseRetriever):
    """Wraps a retriever; keeps the hits whose file the manifest in ``index_dir`` lists as committed before the search."""

    def __init__(self, retriever: BaseRetriever, index_dir: Path, store: MilvusStore) -> None:
        super().__init__()
        self.retriever = retriever
        self.index_dir = Path(index_dir)
        self.store = store

    def _keywords_first(self, writer: Writer | None) -> None:
        """While chunks wait for their vectors the question's best cosine covers only some passages: it decides nothing."""
        pending = self.store.pending_count()
        if not pending:
            return
        total = max(self.store.count(), pending)
        context = current_question()
        context.dense_score = None
        rest = "once the ingest has embedded the rest" if writer else "once an ingest of the folder embeds the rest"
        if writer and writer.embedding and writer.embedding[1] > pending:  # its second pass has embedded some: its rate
            started, size = writer.embedding
            rest += f" (in about {duration(pending * (time.time() - started) / (size - pending))})"
        context.notice(
            f"Searching mostly by keywords: {100 * (total - pending) // total} % of passages have meaning vectors so far; "
            f"answers reach full quality {rest}."
        )

    def _committed(self, hits: list[NodeWithScore], started: float) -> list[NodeWithScore]:
        writer = current_writer(self.index_dir)
        self._keywords_first(writer)
        if not hits and writer is None:
            return hits
        path = state_file(self.index_dir)
        if not path.is_file():
            return []
        with closing(Manifest(path, read_only=True)) as manifest:
            kept = manifest.committed({_file_of(hit) for hit in hits}, before=started)
            if writer is not None:
                files = manifest.done()
                current_question().notice(
                    f"An ingest is writing this index: answers come from the {files} file{'s' if files != 1 else ''} committed so far."
                )
        return [hit for hit in hits if _file_of(hit) in kept]

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        started = time.time()
        return self._committed(self.retriever.retrieve(query_bundle), started)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        started = time.time()
        return self._committed(await self.retriever.aretrieve(query_bundle), started)
