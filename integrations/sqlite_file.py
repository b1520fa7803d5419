"""Opening the SQLite files docsrag keeps (manifest, key-value store, usage meter) the same way."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path


def open_sqlite(
    path: str | Path, schema: str, version: int = 1, check: Callable[[sqlite3.Connection], None] | None = None
) -> sqlite3.Connection:
    """Autocommit, WAL, busy timeout, ``schema`` created, ``version`` stamped; a newer file or one ``check`` rejects is left as it was."""
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    try:
        if (found := conn.execute("PRAGMA user_version").fetchone()[0]) > version:
            raise ValueError(f"{path} has schema version {found}; this docsrag reads up to {version}: upgrade docsrag or remove the file")
        if check:
            check(conn)
    except Exception:
        conn.close()
        raise
    # WAL lets readers run beside the one writer; NORMAL sync keeps the file consistent after a crash. Opening a file
    # that is already set up writes nothing: a write here would wait behind (or, starved, fail beside) a running ingest.
    if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(schema)
    if found != version:
        conn.execute(f"PRAGMA user_version = {int(version)}")
    return conn
