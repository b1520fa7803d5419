"""Memory of the embedded default's `ask`: the embedder loads before the index opens, so the peak stays low."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.proc_tree import TreePeak
from integrations.adapters.local_embedding import LocalMiniLMEmbedding

REPO = Path(__file__).resolve().parent.parent
ORD_QA_DOCS = REPO / "eval" / "ord-qa" / "docs"
QUESTION = "How to introduce randomness to global routing for solution exploration?"
# Measured on 8 ORD-QA docs (161 chunks): ~490 MB, the app ~400 MB and its Milvus Lite server ~90 MB.
ASK_PEAK_BOUND_MB = 540


def test_runtime_loads_the_local_model_before_opening_the_index(settings) -> None:
    from app.composition import open_runtime

    runtime = open_runtime(settings)
    try:
        assert runtime.embed_model._session is not None
    finally:
        runtime.close()
    assert LocalMiniLMEmbedding()._session is None, "the component itself stays lazy"


# ru_maxrss of a forked child starts at its parent's RSS (the pre-exec image counts), and pytest is big by now:
# a small Python in between spawns `python -m app`, waits for it and prints its peak, as /usr/bin/time does.
_MEASURE = (
    "import os, sys; pid = os.posix_spawn(sys.executable, [sys.executable, '-m', 'app', *sys.argv[1:]], os.environ); "
    "_, status, usage = os.wait4(pid, 0); print(usage.ru_maxrss); sys.exit(os.waitstatus_to_exitcode(status))"
)


def _peak_mb(args: list[str]) -> float:
    """Peak RSS of ``python -m app ARGS`` and the Milvus Lite server it starts, in MB.

    The app's own peak is exact (what ``/usr/bin/time -f %M`` reports); the server's is its VmHWM sampled while it runs.
    """
    measure = subprocess.Popen([sys.executable, "-c", _MEASURE, *args], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreePeak(measure.pid) as tree:  # the app and its server
        stdout, stderr = measure.communicate()
    assert measure.returncode == 0, stdout + stderr
    return max(int(stdout.strip().splitlines()[-1]) / 1024, tree.peak_mb)


@pytest.mark.slow
def test_ask_peak_rss_stays_under_bound(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for path in sorted(ORD_QA_DOCS.iterdir())[:8]:
        shutil.copy(path, docs / path.name)
    index = tmp_path / "index"
    ingest = [sys.executable, "-m", "app", "ingest", str(docs), "--index", str(index), "-q"]
    subprocess.run(ingest, cwd=REPO, check=True, capture_output=True)
    peaks = sorted(_peak_mb(["ask", QUESTION, "--index", str(index)]) for _ in range(3))
    assert peaks[1] <= ASK_PEAK_BOUND_MB, f"median ask peak RSS {peaks[1]:.0f} MB (runs: {peaks})"
