"""Opening the SQLite files docsrag keeps (manifest, key-value store, usage meter, embedding cache) the same way."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path


class CorruptFile(RuntimeError):
    """A SQLite file docsrag keeps is damaged; the message names the file and what to do."""


def integrity_problem(conn: sqlite3.Connection) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong (it reads every page), None for a sound file."""
    try:
        rows = [row[0] for row in conn.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        return str(exc)
    return None if rows == ["ok"] else " ".join(" ".join(rows).split())


def _connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection; on a full or read-only disk, where SQLite cannot create the WAL index beside the file,
    the file as it is (``immutable``: what a finished writer committed; a reader there has no writer to wait for)."""
    if not path.is_file():
        raise sqlite3.OperationalError(f"unable to open database file {path}")
    uri = path.resolve().as_uri()
    conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, check_same_thread=False, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA user_version").fetchone()
        return conn
    except sqlite3.OperationalError as exc:
        conn.close()
        if is_corruption(exc):
            raise
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False, isolation_level=None)


def is_corruption(exc: BaseException) -> bool:
    """SQLite's own words for a damaged file (not a busy, missing or read-only one)."""
    return isinstance(exc, sqlite3.DatabaseError) and any(w in str(exc) for w in ("not a database", "malformed", "corrupt"))


def open_sqlite(
    path: str | Path,
    schema: str,
    version: int = 1,
    check: Callable[[sqlite3.Connection], None] | None = None,
    fix: str = "move it aside and run again",
    verify: bool = False,
    read_only: bool = False,
) -> sqlite3.Connection:
    """Autocommit, WAL, busy timeout, ``schema`` created, ``version`` stamped; a newer file or one ``check`` rejects is left as it was.

    A damaged file raises CorruptFile saying ``fix`` (with ``verify``, also for a damaged page); ``read_only`` sets nothing up.
    """
    if read_only:
        try:
            conn = _connect_read_only(Path(path))
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):
                raise CorruptFile(f"{path} is damaged ({exc}): {fix}") from None
            raise
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
    try:
        problem = integrity_problem(conn) if verify else None
        if problem:
            raise CorruptFile(problem)
        if (found := conn.execute("PRAGMA user_version").fetchone()[0]) > version:
            raise ValueError(f"{path} has schema version {found}; this docsrag reads up to {version}: upgrade docsrag or remove the file")
        if check:
            check(conn)
        if read_only:
            return conn
        # WAL lets readers run beside the one writer; NORMAL sync keeps the file consistent after a crash. Opening a file
        # that is already set up writes nothing: a write here would wait behind (or, starved, fail beside) a running ingest.
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(schema)
        if found != version:
            conn.execute(f"PRAGMA user_version = {int(version)}")
    except (CorruptFile, sqlite3.DatabaseError) as exc:
        conn.close()
        if isinstance(exc, CorruptFile) or is_corruption(exc):
            raise CorruptFile(f"{path} is damaged ({exc}): {fix}") from None
        raise
    except Exception:
        conn.close()
        raise
    return conn
