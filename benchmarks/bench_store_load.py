"""Several askers and a running ingest sharing one index through ``serve-store``: errors, wrong answers, latency, memory.

A synthetic corpus (``--files`` Markdown files, each naming its own widget and setting) is ingested through a
``python -m app serve-store`` process. Then ``--askers`` processes retrieve for ``--seconds`` ("What does widget 17
set?", the file that says it must come first) while an ingest of another folder runs in a loop (each round edits
that folder, so every round writes). A second ingest started during each round must be refused (one writer per
index). Reported: requests, errors, wrong first sources, p50/p95 retrieval latency, ingest rounds, refused second
ingests, and the peak RSS of the serve-store process tree.

Run: .venv/bin/python benchmarks/bench_store_load.py [--askers 4] [--seconds 60] [--files 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proc_tree import descendants, rss_mb  # noqa: E402


def write_corpus(folder: Path, files: int, prefix: str, round_: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(files):
        (folder / f"{prefix}{n:03d}.md").write_text(
            f"# Widget {prefix}{n}\n\n## Setting\n\nWidget {prefix}{n} sets the limit of pool {n} to {n * 7 + round_} connections.\n\n"
            f"## Notes\n\nRound {round_} notes about widget {prefix}{n}.\n"
        )


def asker(uri: str, index: str, seconds: float, seed: int, files: int) -> None:
    """One asking process: retrieve until the time is up; print its counts and latencies as JSON."""
    import logging

    logging.disable(logging.WARNING)
    from app.composition import build_retriever, open_runtime
    from settings import load_settings

    runtime = open_runtime(load_settings("local", storage={"index_dir": index, "uri": uri}))
    retriever = build_retriever(runtime, top_k=3)
    rng = random.Random(seed)
    latencies, errors, wrong = [], 0, 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = rng.randrange(files)
        started = time.perf_counter()
        try:
            nodes = retriever.retrieve(f"What does widget w{n} set the limit of pool {n} to?")
        except Exception:  # noqa: BLE001 - counted, the run goes on
            errors += 1
            continue
        latencies.append((time.perf_counter() - started) * 1000)
        if not nodes or nodes[0].node.metadata.get("source") != f"w{n:03d}.md":
            wrong += 1
    print(json.dumps({"latencies": latencies, "errors": errors, "wrong": wrong}))


def cli(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app", *args], cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def tree_peak_mb(pid: int) -> float:
    return rss_mb(pid, "VmHWM") + sum(rss_mb(child, "VmHWM") for child in descendants(pid))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--askers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--asker", nargs=5, metavar=("URI", "INDEX", "SECONDS", "SEED", "FILES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.asker:
        uri, index, seconds, seed, files = args.asker
        asker(uri, index, float(seconds), int(seed), int(files))
        return

    from integrations.adapters.milvus_store import free_port

    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        work = Path(tmp)
        index, docs, other = work / "index", work / "docs", work / "other"
        write_corpus(docs, args.files, "w")
        server = cli("serve-store", "--index", str(index), "--port", str(free_port()), env={})
        uri = None
        while uri is None:
            line = server.stdout.readline()
            if not line:
                raise SystemExit(f"serve-store exited: {server.stderr.read()}")
            if found := re.search(r"DOCSRAG_STORAGE__URI=(\S+)", line):
                uri = found.group(1)
        env = {"DOCSRAG_STORAGE__URI": uri, "DOCSRAG_STORAGE__INDEX_DIR": str(index)}
        try:
            first = cli("ingest", str(docs), "-q", env=env)
            if first.wait() != 0:
                raise SystemExit(first.stderr.read())
            askers = [
                subprocess.Popen(
                    [sys.executable, __file__, "--asker", uri, str(index), str(args.seconds), str(seed), str(args.files)],
                    cwd=REPO,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                for seed in range(args.askers)
            ]
            rounds, refused, accepted_second = 0, 0, 0
            deadline = time.monotonic() + args.seconds + 15  # the askers load their model first
            while time.monotonic() < deadline:
                write_corpus(other, 40, "o", rounds)
                writer = cli("ingest", str(other), "-q", env=env)
                time.sleep(1.0)
                if writer.poll() is None:  # a second writer while the first one runs
                    second = cli("ingest", str(docs), "-q", env=env)
                    _, err = second.communicate()
                    if second.returncode != 0 and "another ingest" in err:
                        refused += 1
                    else:
                        accepted_second += 1
                _, err = writer.communicate()
                if writer.returncode != 0:
                    raise SystemExit(f"the ingest failed: {err}")
                rounds += 1
            results = [json.loads(proc.communicate()[0].strip().splitlines()[-1]) for proc in askers]
            peak = tree_peak_mb(server.pid)
        finally:
            server.terminate()
            server.wait(timeout=60)
    latencies = sorted(x for r in results for x in r["latencies"])
    errors, wrong = sum(r["errors"] for r in results), sum(r["wrong"] for r in results)
    requests = len(latencies) + errors
    p95 = latencies[int(0.95 * (len(latencies) - 1))] if latencies else float("nan")
    print(
        f"{args.askers} askers x {args.seconds:g} s + {rounds} ingest rounds: {requests} requests, {errors} errors, {wrong} wrong; "
        f"p50 {statistics.median(latencies):.0f} ms, p95 {p95:.0f} ms; second ingests refused {refused}, let through {accepted_second}; "
        f"serve-store peak RSS {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
