"""A write the disk refused (full, read-only, not writable) or a Milvus server that went away, recognised wherever it
surfaced (OSError, SQLite's or Milvus' words), as one line with the fix; docs/ingestion.md says why nothing is lost."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
READ_ONLY = (errno.EROFS, errno.EACCES, errno.EPERM)
FULL_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded", "file too large")
READ_ONLY_WORDS = ("read-only file system", "readonly database", "permission denied")


def _chain(exc: BaseException):
    seen: set[int] = set()
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        stack.extend((current.__cause__, current.__context__))


def refused_write(exc: BaseException) -> str | None:
    """'full' or 'read-only' when ``exc`` (or what it was raised from) is the disk refusing a write, else None."""
    for current in _chain(exc):
        code = getattr(current, "errno", None)
        if isinstance(current, OSError) and code in FULL:
            return "full"
        if isinstance(current, OSError) and code in READ_ONLY:
            return "read-only"
        text = str(current).lower()
        if any(words in text for words in FULL_WORDS):
            return "full"
        if any(words in text for words in READ_ONLY_WORDS):
            return "read-only"
    return None


def storage_message(exc: BaseException, where: str) -> str | None:
    """The one line to show for a refused write under ``where`` (the index folder), or None for another failure."""
    kind = refused_write(exc)
    if kind is None and (any("disk i/o error" in str(current).lower() for current in _chain(exc)) or _lost_store(exc)):
        # SQLite's word when it cannot even make its WAL index, or a Milvus Lite server that died writing: ask the disk
        kind = _disk_state(where)
    if kind == "full":
        return (
            f"the disk holding {where} is full (free: {_free(where)}); nothing indexed before is lost. "
            f"Free some space (df -h {where}) and run the command again: an ingest repairs the step it was writing"
        )
    if kind == "read-only":
        return (
            f"{where} cannot be written (a read-only file system or missing permission); nothing in it was changed. Milvus "
            "Lite writes beside its index file even to answer: make the folder writable, or copy it to a writable disk "
            "and pass --index COPY"
        )
    return None


def _existing(where: str) -> Path:
    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free(where: str) -> str:
    try:
        return f"{shutil.disk_usage(_existing(where)).free / 1e6:.1f} MB"
    except OSError:
        return "unknown"


def _disk_state(where: str) -> str | None:
    try:
        stats = os.statvfs(_existing(where))
    except OSError:
        return None
    if stats.f_flag & os.ST_RDONLY:
        return "read-only"
    return "full" if stats.f_bavail * stats.f_frsize < 1_000_000 else None


LOST_WORDS = ("fail connecting", "server unavailable", "connection refused", "unavailable", "socket closed")


def _lost_store(exc: BaseException) -> bool:
    return any(
        (type(current).__module__ or "").startswith(("pymilvus", "grpc")) and any(words in str(current).lower() for words in LOST_WORDS)
        for current in _chain(exc)
    )


def lost_store_message(exc: BaseException, uri: str) -> str | None:
    """The one line for a Milvus server (``serve-store``, a cluster) that stopped answering mid-command, or None."""
    if not _lost_store(exc):
        return None
    return (
        f"lost the connection to the Milvus store at {uri}: if it is `python -m app serve-store`, it stopped. Start "
        "it again and rerun the command; nothing committed before is lost, and an ingest repairs the step it was writing"
    )
