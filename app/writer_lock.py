"""One writer per index: an ingest holds ``<index_dir>/.ingest.lock`` from its repair step to its last commit.

Milvus Lite's own lock keeps a second process off an embedded index, but every
process sharing an index through ``serve-store`` (or a Milvus server) opens it
at once; two ingests would each take the other's pending batch for a killed
run's leftovers and delete it. The lock sits beside the manifest, which all of
them share, and is an ``flock``: the kernel drops it when its holder dies, so
a killed ingest never leaves the index locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


class IndexBusy(RuntimeError):
    """Another ingest is writing to this index."""


def lock_file(index_dir: Path) -> Path:
    return Path(index_dir) / ".ingest.lock"


@contextlib.contextmanager
def sole_writer(index_dir: Path) -> Iterator[None]:
    """Hold the index's writer lock for the block, or raise IndexBusy naming the holder."""
    path = lock_file(index_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise IndexBusy(
                f"another ingest ({holder}) is writing to the index in {index_dir}; one ingest at a time per index: "
                "run this one again when it has finished"
            ) from None
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
