"""A persistent embedding cache in one SQLite file, keyed by (model id, sha256 of the exact text sent); each write commits
at once, so an interrupted ingest keeps what it paid for."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from integrations.adapters.sqlite_file import CorruptFile, open_sqlite

logger = logging.getLogger(__name__)


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Get and put vectors by (model, text); safe to share between threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._conn = self._open()
        except CorruptFile as exc:  # only saved API calls are lost: start afresh
            for stale in (self.path, Path(f"{self.path}-wal"), Path(f"{self.path}-shm")):
                stale.unlink(missing_ok=True)
            logger.warning("%s; it was deleted and fills again as texts are embedded", exc)
            self._conn = self._open()

    def _open(self) -> sqlite3.Connection:
        return open_sqlite(
            self.path,
            "CREATE TABLE IF NOT EXISTS embeddings"
            " (model TEXT NOT NULL, sha256 TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, sha256))",
            fix="the embedding cache is damaged",
            verify=True,
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get_many(self, model: str, texts: Sequence[str]) -> list[list[float] | None]:
        """The cached vector of each text, or None where there is none."""
        keys = [text_key(t) for t in texts]
        found: dict[str, bytes] = {}
        unique = sorted(set(keys))
        with self._lock:
            for start in range(0, len(unique), 500):  # stay under SQLite's bound-parameter limit
                part = unique[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT sha256, vector FROM embeddings WHERE model = ? AND sha256 IN ({marks})", (model, *part)
                ).fetchall()
                found.update(rows)
        return [np.frombuffer(found[k], dtype=np.float32).tolist() if k in found else None for k in keys]

    def put_many(self, model: str, texts: Sequence[str], vectors: Sequence[Sequence[float]]) -> None:
        rows = [(model, text_key(t), np.asarray(v, dtype=np.float32).tobytes()) for t, v in zip(texts, vectors, strict=True)]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO embeddings (model, sha256, vector) VALUES (?, ?, ?)", rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0])
