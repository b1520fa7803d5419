"""A LlamaIndex key-value store in one SQLite file: each write commits at once, nothing is rewritten as a whole."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from llama_index.core.storage.kvstore.types import DEFAULT_COLLECTION, BaseKVStore

from integrations.adapters.sqlite_file import open_sqlite


class SQLiteKVStore(BaseKVStore):
    """Key-value collections stored as rows (collection, key, JSON value)."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._conn = open_sqlite(
            path,
            "CREATE TABLE IF NOT EXISTS kv "
            "(collection TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (collection, key))",
        )

    def close(self) -> None:
        self._conn.close()

    def put(self, key: str, val: dict, collection: str = DEFAULT_COLLECTION) -> None:
        self.put_all([(key, val)], collection=collection)

    async def aput(self, key: str, val: dict, collection: str = DEFAULT_COLLECTION) -> None:
        self.put(key, val, collection)

    def put_all(self, kv_pairs: list[tuple[str, dict]], collection: str = DEFAULT_COLLECTION, batch_size: int = 1) -> None:
        rows = [(collection, key, json.dumps(val)) for key, val in kv_pairs]
        with self._lock:
            self._conn.executemany("INSERT OR REPLACE INTO kv (collection, key, value) VALUES (?, ?, ?)", rows)

    def get(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict | None:
        with self._lock:
            row = self._conn.execute("SELECT value FROM kv WHERE collection = ? AND key = ?", (collection, key)).fetchone()
        return json.loads(row[0]) if row else None

    async def aget(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict | None:
        return self.get(key, collection)

    def get_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict]:
        with self._lock:
            rows = self._conn.execute("SELECT key, value FROM kv WHERE collection = ?", (collection,)).fetchall()
        return {key: json.loads(value) for key, value in rows}

    async def aget_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict]:
        return self.get_all(collection)

    def delete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        with self._lock:
            cursor = self._conn.execute("DELETE FROM kv WHERE collection = ? AND key = ?", (collection, key))
        return cursor.rowcount > 0

    async def adelete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        return self.delete(key, collection)
