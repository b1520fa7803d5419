"""kill -9 at N points of an ingest, then a normal run: does the index end where a run that was never killed ends?

A synthetic corpus (``--files`` Markdown files, several sections each) is ingested once (version 1); every file is
then edited (version 2): sections change, one file shrinks (its last pieces must go) and one grows past
``ingestion.max_file_chunks`` (its version 1 must be kept). For each of ``--points`` kill points spread over the
edit run's duration, a copy of the version-1 index is updated with ``python -m app ingest``, killed with SIGKILL at
that point (spread from its first pending mark to its end: with keywords first, over both passes), and ingested
again. The result is compared with a clean update of the same copy: every chunk (id, text, source, whether it still
waits for its vector, its vector within 1e-4) and every manifest row (name, hash, chunk count, state). One difference
makes that point divergent.

Run: .venv/bin/python benchmarks/bench_kill_sweep.py [--files 60] [--points 10]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ENV = {"DOCSRAG_INGESTION__BATCH_FILES": "4", "DOCSRAG_INGESTION__MAX_FILE_CHUNKS": "60"}
KEEP, SHRINK = "z_keep.md", "a_shrink.md"


def write_corpus(folder: Path, files: int, version: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(files):
        sections = 6
        if version == 2 and n % 3 == 0:
            sections = 7  # a section added
        text = f"# Topic {n}\n\n" + "\n\n".join(
            f"## Part {p}\n\nTopic {n} part {p} explains setting {n * 10 + p}" + (" (revised)" if version == 2 and p % 2 else "") + "."
            for p in range(sections)
        )
        (folder / f"topic{n:03d}.md").write_text(text)
    shrink = "".join(f"## Step {p}\n\nStep {p} of the shrinking guide.\n\n" for p in range(8 if version == 1 else 3))
    (folder / SHRINK).write_text("# Shrinking guide\n\n" + shrink)
    keep = "# Keep\n\nThe keep flag sets the retention to 17 days.\n"
    if version == 2:  # past max_file_chunks: the version indexed before must stay
        keep += "".join(f"## Part {p}\n\n" + f"Filler sentence {p} about nothing much at all. " * 4 + "\n\n" for p in range(200))
    (folder / KEEP).write_text(keep)


def ingest(docs: Path, index: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app", "ingest", str(docs), "--index", str(index), "-q"],
        cwd=REPO,
        env={**os.environ, **ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(docs: Path, index: Path) -> str:
    proc = ingest(docs, index)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed: {err}")
    return out


def pending(index: Path) -> bool:
    try:
        with sqlite3.connect(index / "state.sqlite") as conn:
            return conn.execute("SELECT COUNT(*) FROM files WHERE state = 'pending'").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def snapshot(index: Path) -> tuple[dict, list, dict]:
    """(chunk id -> text, source and whether it waits for its vector), the manifest rows, chunk id -> vector."""
    import numpy as np

    from integrations.adapters.milvus_store import PENDING_KEY, MilvusStore
    from settings import load_settings

    settings = load_settings("local", storage={"index_dir": str(index)})
    store = MilvusStore(settings, 384)
    try:
        rows = store.rows(["id", "text", "source", "embedding", PENDING_KEY], limit=16000)
    finally:
        store.close()
    with sqlite3.connect(index / "state.sqlite") as conn:
        manifest = conn.execute("SELECT source, sha256, pieces, chunks, state FROM files ORDER BY source").fetchall()
    chunks = {row["id"]: (row["text"], row["source"], bool(row.get(PENDING_KEY))) for row in rows}
    return chunks, manifest, {row["id"]: np.asarray(row["embedding"], dtype=np.float32) for row in rows}


def same_index(one: tuple[dict, list, dict], other: tuple[dict, list, dict]) -> bool:
    """Same chunks and manifest, and every vector equal up to float noise (a batch's make-up moves the last digits)."""
    import numpy as np

    return one[:2] == other[:2] and all(np.allclose(vector, other[2][key], atol=1e-4) for key, vector in one[2].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=60)
    parser.add_argument("--points", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_kill_") as tmp:
        work = Path(tmp)
        docs, base = work / "docs", work / "base"
        write_corpus(docs, args.files, 1)
        finish(docs, base)
        write_corpus(docs, args.files, 2)

        clean = work / "clean"
        shutil.copytree(base, clean)
        started = time.perf_counter()
        proc, first_write = ingest(docs, clean), None
        while proc.poll() is None:
            if first_write is None and pending(clean):
                first_write = time.perf_counter() - started
            time.sleep(0.05)
        duration = time.perf_counter() - started
        out = proc.stdout.read()
        first_write = first_write or duration / 2
        assert f"skipped: {KEEP}" in out and "previously indexed version is kept" in out, out
        reference = snapshot(clean)
        chunks = len(reference[0])
        print(f"{args.files + 2} files, {chunks} chunks; a clean update takes {duration:.1f} s, writing from {first_write:.1f} s")

        divergent, resumes = [], []
        for point in range(args.points):
            index = work / f"kill{point}"
            shutil.copytree(base, index)
            at = first_write + (duration - first_write) * (point + 0.5) / args.points  # spread over the writing
            proc = ingest(docs, index)
            time.sleep(at)
            killed = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            t0 = time.perf_counter()
            resumed = finish(docs, index)
            resumes.append(time.perf_counter() - t0)
            same = same_index(snapshot(index), reference)
            repaired = sum(line.startswith("repaired:") for line in resumed.splitlines())
            print(
                f"kill at {at:5.1f} s ({'mid-run' if killed else 'after it ended'}): {repaired:2d} repaired, "
                f"resume {resumes[-1]:.1f} s, {'same as a clean run' if same else 'DIVERGED'}"
            )
            if not same:
                divergent.append(point)
        print(f"divergent: {len(divergent)} of {args.points}; median resume {statistics.median(resumes):.1f} s")
        if divergent:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
