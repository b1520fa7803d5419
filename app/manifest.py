"""What the index holds, file by file: content hash, pieces, chunks, and whether a write is in flight.

A file is keyed by its id (integrations.node_ids: its folder root plus its path
inside it); ``source`` is the name shown for it, unique in the index.

A file is marked ``pending`` before its chunks are written and ``done`` after;
a run that finds ``pending`` rows (the previous run was killed) deletes those
files' chunks and ingests them again, so the index never keeps half a file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from integrations.sqlite_file import open_sqlite


@dataclass
class FileRecord:
    file_id: str
    source: str
    root: str
    sha256: str
    size: int
    mtime_ns: int
    fmt: str
    pieces: int
    chunks: int
    state: str
    ingested_at: float


class OldIndexError(RuntimeError):
    """An index written by a docsrag that named chunks after file names; it must be ingested again."""


def _refuse_name_keyed(conn: sqlite3.Connection, path: Path) -> None:
    columns = [row[1] for row in conn.execute("PRAGMA table_info(files)")]
    if columns and "file_id" not in columns:
        index_dir = path.parent
        raise OldIndexError(
            f"The index in {index_dir} was written by an older docsrag whose chunk ids were built from file names "
            "(a file name could corrupt it); this version does not update it. Ingest the documents again into a new "
            f"index (--index NEW_DIR), or delete {path} and {index_dir / 'milvus.db'} (on a Milvus server: drop the "
            "collection) and ingest them again; uploaded files in uploads/ stay."
        )


class Manifest:
    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._conn = open_sqlite(
            path,
            """CREATE TABLE IF NOT EXISTS files (
                file_id TEXT PRIMARY KEY, source TEXT NOT NULL, root TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL, fmt TEXT NOT NULL, pieces INTEGER NOT NULL, chunks INTEGER NOT NULL,
                state TEXT NOT NULL, ingested_at REAL NOT NULL);
            CREATE INDEX IF NOT EXISTS files_by_source ON files (source)""",
            check=lambda conn: _refuse_name_keyed(conn, Path(path)),
        )

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[FileRecord]:
        with self._lock:
            return [FileRecord(*row) for row in self._conn.execute(sql, args).fetchall()]

    def get(self, file_id: str) -> FileRecord | None:
        rows = self._rows("SELECT * FROM files WHERE file_id = ?", (file_id,))
        return rows[0] if rows else None

    def named(self, sources: list[str]) -> list[FileRecord]:
        """The files shown under these names."""
        return [record for source in sources for record in self._rows("SELECT * FROM files WHERE source = ?", (source,))]

    def all(self) -> list[FileRecord]:
        return self._rows("SELECT * FROM files ORDER BY source")

    def pending(self) -> list[FileRecord]:
        return self._rows("SELECT * FROM files WHERE state = 'pending'")

    def under_root(self, root: str) -> list[FileRecord]:
        return self._rows("SELECT * FROM files WHERE root = ?", (root,))

    def put(self, record: FileRecord) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.file_id,
                    record.source,
                    record.root,
                    record.sha256,
                    record.size,
                    record.mtime_ns,
                    record.fmt,
                    record.pieces,
                    record.chunks,
                    record.state,
                    record.ingested_at,
                ),
            )

    def mark_pending(self, records: list[FileRecord]) -> None:
        for record in records:
            record.state = "pending"
            record.ingested_at = time.time()
            self.put(record)

    def remove(self, file_id: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM files WHERE file_id = ?", (file_id,))


def state_file(index_dir: Path) -> Path:
    """The index's SQLite state file (the pipeline docstore and this manifest)."""
    return Path(index_dir) / "state.sqlite"


def indexed_files(index_dir: Path) -> int:
    """How many files the index in ``index_dir`` holds; 0 where there is none. Creates and writes nothing."""
    path = state_file(index_dir)
    if not path.is_file():
        return 0
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'files'").fetchone() is None:
            return 0
        return conn.execute("SELECT count(*) FROM files").fetchone()[0]
    finally:
        conn.close()


def check_index(index_dir: Path) -> None:
    """Refuse an index written by an older docsrag (OldIndexError says what to do); a missing index is fine."""
    if state_file(index_dir).is_file():
        Manifest(state_file(index_dir)).close()


def file_ids_named(index_dir: Path, sources: list[str]) -> list[str]:
    """The ids of the files shown under these names; an unknown name is a ValueError naming it."""
    manifest = Manifest(state_file(index_dir)) if state_file(index_dir).is_file() else None
    try:
        records = manifest.named(sources) if manifest else []
    finally:
        if manifest:
            manifest.close()
    unknown = sorted(set(sources) - {record.source for record in records})
    if unknown:
        raise ValueError(f"no ingested file is named {', '.join(map(repr, unknown))}: give names as the document library lists them")
    return [record.file_id for record in records]
