"""One writer per index: an ingest holds ``<index_dir>/.ingest.lock`` (an flock, naming its pid, its embedded store's
socket and its second pass) from its repair step to its last commit (docs/ingestion.md)."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path


class IndexBusy(RuntimeError):
    """Another ingest is writing to this index."""


def lock_file(index_dir: Path) -> Path:
    return Path(index_dir) / ".ingest.lock"


@dataclass
class Writer:
    """The ingest holding an index's writer lock, as its lock file names it."""

    pid: int
    store: str | None  # the socket of its embedded store, if it serves one
    embedding: tuple[float, int] | None = None  # its second pass: when it started (time.time()) and the chunks it embeds


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def current_writer(index_dir: Path) -> Writer | None:
    """The ingest writing to this index now, or None; reads the lock file without taking the lock (probing it would
    make an ingest starting at that moment fail). A killed holder's file is recognised by its dead pid."""
    try:
        lines = lock_file(index_dir).read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(" ", 1) for line in lines if " " in line)
    try:
        pid = int(fields.get("pid", ""))
    except ValueError:
        return None
    if not _alive(pid):
        return None
    started, _, total = fields.get("embedding", "").partition(" ")
    try:
        embedding = (float(started), int(total)) if total else None
    except ValueError:
        embedding = None
    return Writer(pid, fields.get("store"), embedding)


@contextlib.contextmanager
def sole_writer(index_dir: Path, store: str | None = None) -> Iterator[Callable[[str, str], None]]:
    """Hold the index's writer lock for the block, or raise IndexBusy naming the holder; ``store`` is the socket readers
    may use meanwhile. Yields ``note(key, value)``, which records a fact for them (``embedding``: the second pass's start
    and size); the lock file is cleared when the block ends."""
    path = lock_file(index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip().splitlines()[:1] or ["another process"]
            raise IndexBusy(
                f"another ingest ({holder[0]}) is writing to the index in {index_dir}; one ingest at a time per index: "
                "run this one again when it has finished"
            ) from None
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}\n" + (f"store {store}\n" if store else ""))
            handle.flush()

            def note(key: str, value: str) -> None:
                handle.write(f"{key} {value}\n")
                handle.flush()

            yield note
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)
