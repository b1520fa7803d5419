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


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used, 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class TreePeak:
    """The one memory sampler of the benchmarks and tests: while it runs, ``peak_mb`` is the largest sum of ``key``
    (VmHWM: peak RSS; VmRSS: current RSS) over a process's descendants (and the process itself with ``include_root``),
    and ``cpu_s`` the CPU seconds they used.

    VmHWM only grows, so sampling every 50 ms loses at most the growth of a descendant's last 50 ms.
    """

    def __init__(self, root: int, *, include_root: bool = False, key: str = "VmHWM", interval_s: float = 0.05) -> None:
        self.root, self.include_root, self.key, self.interval_s = root, include_root, key, interval_s
        self.peak_mb = 0.0
        self._cpu: dict[int, float] = {}
        self._cpu_start = cpu_s(root) if include_root else 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def cpu_s(self) -> float:
        """CPU seconds used by the sampled processes while sampled (contention-independent work)."""
        rest = sum(v for pid, v in self._cpu.items() if pid != self.root)
        return rest + (cpu_s(self.root) - self._cpu_start if self.include_root else 0.0)

    def _sample(self) -> None:
        pids = [*([self.root] if self.include_root else []), *descendants(self.root)]
        self.peak_mb = max(self.peak_mb, sum(rss_mb(pid, self.key) for pid in pids))
        for pid in pids:
            self._cpu[pid] = max(self._cpu.get(pid, 0.0), cpu_s(pid))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
