"""What the manifest says the store holds, checked against the store: files whose chunks are missing (lost, emptied or
changed behind docsrag's back); one ``count(*)`` decides whether to look per file."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from app.manifest import FileRecord
from integrations import node_ids
from integrations.adapters.milvus_store import MilvusStore


@dataclass
class StoreCheck:
    stored: int  # chunks in the store
    expected: int  # chunks the manifest lists for committed files
    missing: list[FileRecord]  # committed files with fewer chunks in the store than the manifest lists

    def message(self) -> str:
        files = ", ".join(record.source for record in self.missing[:3]) + (" …" if len(self.missing) > 3 else "")
        return (
            f"the store holds {self.stored} chunks, the manifest lists {self.expected}: {len(self.missing)} ingested "
            f"file(s) have missing chunks ({files}); the store file was lost, emptied or changed outside docsrag"
        )


def check_store(store: MilvusStore, records: list[FileRecord]) -> StoreCheck:
    done = [record for record in records if record.state == "done"]
    expected, stored = sum(record.chunks for record in done), store.count()
    if stored == expected:
        return StoreCheck(stored, expected, [])
    counts = Counter((node_ids.parse_piece_id(row["doc_id"]) or ("",))[0] for rows in store.all_rows(["doc_id"]) for row in rows)
    return StoreCheck(stored, expected, [record for record in done if counts[record.file_id] < record.chunks])
