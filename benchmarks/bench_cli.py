"""Wall time of CLI commands, from process start to exit: the median of N runs each.

    .venv/bin/python benchmarks/bench_cli.py [--index DIR] [--runs 5] [--json]

Commands timed: ``--help``, ``config``, ``usage``, ``gaps`` (none should load
LlamaIndex) and ``ask`` on an embedded index (extractive answer, local
embedder, Milvus Lite started in the background while the models load).
Targets (issue 28): ``--help`` <= 0.5 s and ``ask`` <= 2 s on an idle machine.
Without ``--index`` a temporary index of the repo's docs/ folder is built first
(not timed). The load average is printed beside the numbers: on a shared
2-core machine they grow with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUESTION = "How do I ingest a folder?"


def wall_s(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "app", *args], cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="an existing index (default: a temporary index of docs/)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        index = args.index or Path(tmp) / "index"
        if args.index is None:
            subprocess.run([sys.executable, "-m", "app", "ingest", str(REPO / "docs"), "--index", str(index), "-q"], cwd=REPO, check=True)
        commands = {
            "--help": ["--help"],
            "config": ["config", "--index", str(index)],
            "usage": ["usage", "--index", str(index)],
            "gaps": ["gaps", "--index", str(index)],
            "ask": ["ask", QUESTION, "--index", str(index)],
        }
        wall_s(commands["ask"])  # warm the file cache (not timed)
        load_before = os.getloadavg()[0]
        runs = {name: [wall_s(command) for _ in range(args.runs)] for name, command in commands.items()}
        load_after = os.getloadavg()[0]
    result = {
        name: {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]} for name, times in runs.items()
    }
    result["load_average_1min"] = [round(load_before, 2), round(load_after, 2)]
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name in commands:
        print(f"{name:<8} median {result[name]['median_s']:.2f} s  (runs: {', '.join(f'{t:.2f}' for t in result[name]['runs_s'])})")
    print(f"load average (1 min) before/after: {load_before:.2f} / {load_after:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
