"""What the index holds, file by file: content hash, pieces, chunks, and whether a write is in flight.

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


@dataclass
class FileRecord:
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


class Manifest:
    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(
            """CREATE TABLE IF NOT EXISTS files (
                source TEXT PRIMARY KEY, root TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL,
                mtime_ns INTEGER NOT NULL, fmt TEXT NOT NULL, pieces INTEGER NOT NULL, chunks INTEGER NOT NULL,
                state TEXT NOT NULL, ingested_at REAL NOT NULL)"""
        )

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[FileRecord]:
        with self._lock:
            return [FileRecord(*row) for row in self._conn.execute(sql, args).fetchall()]

    def get(self, source: str) -> FileRecord | None:
        rows = self._rows("SELECT * FROM files WHERE source = ?", (source,))
        return rows[0] if rows else None

    def all(self) -> list[FileRecord]:
        return self._rows("SELECT * FROM files ORDER BY source")

    def pending(self) -> list[FileRecord]:
        return self._rows("SELECT * FROM files WHERE state = 'pending'")

    def under_root(self, root: str) -> list[FileRecord]:
        return self._rows("SELECT * FROM files WHERE root = ?", (root,))

    def put(self, record: FileRecord) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
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

    def remove(self, source: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM files WHERE source = ?", (source,))
