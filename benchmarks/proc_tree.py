"""Memory of a process tree from /proc: the embedded Milvus Lite runs as a child process of the app."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def rss_mb(pid: int | str = "self", key: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    return 0.0


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        for child in children.get(pid, []):
            out.append(child)
            todo.append(child)
    return out


def children_peak_mb(root: int | None = None) -> float:
    """Sum of the peak RSS (VmHWM) of a process's living descendants (default: this process's)."""
    return sum(rss_mb(pid, "VmHWM") for pid in descendants(os.getpid() if root is None else root))


class DescendantsPeak:
    """Watches a process's descendants while it runs; ``peak_mb`` is the largest sum of their VmHWM seen.

    VmHWM only grows, so sampling every 50 ms loses at most the growth of a descendant's last 50 ms.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_mb = max(self.peak_mb, children_peak_mb(self.root))

    def __enter__(self) -> DescendantsPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
