"""What the index holds, file by file: content hash, pieces, chunks, and whether a write is in flight (docs/ingestion.md)."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import astuple, dataclass
from pathlib import Path

from integrations.adapters.sqlite_file import open_sqlite


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


_COLUMNS = """file_id TEXT PRIMARY KEY, source TEXT NOT NULL, root TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, fmt TEXT NOT NULL, pieces INTEGER NOT NULL, chunks INTEGER NOT NULL,
    state TEXT NOT NULL, ingested_at REAL NOT NULL"""


def damaged_state_fix(path: Path) -> str:
    return (
        f"it holds the index's manifest and docstore. Move it aside (mv {path} {path}.damaged) and ingest your folders "
        "again: every file is read and embedded again, and its chunks in the store are replaced, not doubled"
    )


class Manifest:
    def __init__(self, path: str | Path, verify: bool = False, read_only: bool = False) -> None:
        """``verify``: check every page first (an ingest, about to trust what it says is unchanged); ``read_only``: a
        process that only lists files (it then works on a full or read-only disk)."""
        self._lock = threading.Lock()
        schema = f"""CREATE TABLE IF NOT EXISTS files ({_COLUMNS});
            CREATE INDEX IF NOT EXISTS files_by_source ON files (source);
            CREATE TABLE IF NOT EXISTS replaced ({_COLUMNS})"""
        self._conn = open_sqlite(
            path,
            schema,
            check=lambda conn: _refuse_name_keyed(conn, Path(path)),
            fix=damaged_state_fix(Path(path)),
            verify=verify,
            read_only=read_only,
        )
        if read_only and not self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'files'").fetchone():
            self._conn.close()  # a state file whose first ingest has not listed a file yet: an empty manifest
            self._conn = open_sqlite(":memory:", schema)

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

    def count(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM files").fetchone()[0]

    def done(self) -> int:
        """Files whose chunks are all written."""
        with self._lock:
            return self._conn.execute("SELECT count(*) FROM files WHERE state = 'done'").fetchone()[0]

    def all(self) -> list[FileRecord]:
        return self._rows("SELECT * FROM files ORDER BY source")

    def pending(self) -> list[FileRecord]:
        return self._rows("SELECT * FROM files WHERE state = 'pending'")

    def roots(self) -> list[tuple[str, int, int]]:
        """(root, files, chunks) of every folder the index holds files from."""
        with self._lock:
            rows = self._conn.execute("SELECT root, COUNT(*), SUM(chunks) FROM files GROUP BY root ORDER BY root").fetchall()
        return [(root, int(files), int(chunks or 0)) for root, files, chunks in rows]

    def under_root(self, root: str) -> list[FileRecord]:
        return self._rows("SELECT * FROM files WHERE root = ?", (root,))

    def committed(self, file_ids: set[str], before: float) -> set[str]:
        """Those of these files whose chunks were all written before ``before`` (time.time()) and not touched since."""
        with self._lock:
            return {
                file
                for file in file_ids
                if self._conn.execute(
                    "SELECT 1 FROM files WHERE file_id = ? AND state = 'done' AND ingested_at < ?", (file, before)
                ).fetchone()
            }

    def replaced_version(self, file_id: str) -> FileRecord | None:
        """The indexed version of a file left pending by a killed run (its chunks may still be in the store)."""
        rows = self._rows("SELECT * FROM replaced WHERE file_id = ?", (file_id,))
        return rows[0] if rows else None

    def _write(self, table: str, record: FileRecord) -> None:
        self._conn.execute(f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", astuple(record))

    def put(self, record: FileRecord) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._write("files", record)
            if record.state == "done":
                self._conn.execute("DELETE FROM replaced WHERE file_id = ?", (record.file_id,))

    def mark_pending(self, records: list[FileRecord], previous: dict[str, FileRecord | None] | None = None) -> None:
        """Mark files pending, remembering the indexed version (``previous``, by file id) of those that had one."""
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            for record in records:
                old = (previous or {}).get(record.file_id)
                if old is not None and old.state == "done":
                    self._write("replaced", old)
                record.state = "pending"
                record.ingested_at = time.time()
                self._write("files", record)

    def remove(self, file_id: str) -> None:
        with self._lock, self._conn:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute("DELETE FROM files WHERE file_id = ?", (file_id,))
            self._conn.execute("DELETE FROM replaced WHERE file_id = ?", (file_id,))


def state_file(index_dir: Path) -> Path:
    """The index's SQLite state file (the pipeline docstore and this manifest)."""
    return Path(index_dir) / "state.sqlite"


def indexed_files(index_dir: Path) -> int:
    """How many files the index in ``index_dir`` holds; 0 where there is none. Creates and writes nothing."""
    path = state_file(index_dir)
    if not path.is_file():
        return 0
    with closing(Manifest(path, read_only=True)) as manifest:
        return manifest.count()


def check_index(index_dir: Path) -> None:
    """Refuse an index written by an older docsrag (OldIndexError says what to do); a missing index is fine."""
    if state_file(index_dir).is_file():
        Manifest(state_file(index_dir), read_only=True).close()


def file_ids_named(index_dir: Path, sources: list[str]) -> list[str]:
    """The ids of the files shown under these names; an unknown name is a ValueError naming it."""
    records = []
    if state_file(index_dir).is_file():
        with closing(Manifest(state_file(index_dir), read_only=True)) as manifest:
            records = manifest.named(sources)
    unknown = sorted(set(sources) - {record.source for record in records})
    if unknown:
        raise ValueError(f"no ingested file is named {', '.join(map(repr, unknown))}: give names as the document library lists them")
    return [record.file_id for record in records]
