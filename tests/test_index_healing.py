"""The index heals itself from what it can prove: a killed run, a lost store, two ingests at once."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, serve_store

KEEP = "z_keepme.md"
# Runs `python -m app ARGS…` and dies by SIGKILL right after the batch holding z_keepme.md is marked pending.
KILLED_AT_PENDING = f"""
import os, signal, sys
from app.manifest import Manifest
original = Manifest.mark_pending
def mark_then_die(self, records, *args, **kwargs):
    original(self, records, *args, **kwargs)
    if any(record.source == {KEEP!r} for record in records):
        os.kill(os.getpid(), signal.SIGKILL)
Manifest.mark_pending = mark_then_die
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Runs `python -m app ARGS…`, pausing 60 s once its first batch is marked pending (an ingest caught mid-write).
PAUSED_AT_PENDING = """
import sys, time
from app.manifest import Manifest
original = Manifest.mark_pending
def mark_then_wait(self, records, *args, **kwargs):
    original(self, records, *args, **kwargs)
    time.sleep(60)
Manifest.mark_pending = mark_then_wait
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def topic(n: int, edit: str = "") -> str:
    return f"# Topic {n}\n\n" + "\n\n".join(f"## Part {p}\n\nTopic {n} part {p} explains setting {n * 10 + p}.{edit}" for p in range(3))


def run(*args: str, script: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "app"]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def file_chunks(index: Path, uri: str | None = None) -> dict[str, list[str]]:
    """Chunk ids in the store by source name."""
    from integrations.adapters.milvus_store import MilvusStore
    from settings import load_settings

    settings = load_settings("local", storage={"index_dir": str(index), **({"uri": uri} if uri else {})})
    store = MilvusStore(settings, 384)
    try:
        rows = store.client.query(store.collection_name, filter="", output_fields=["id", "source"], limit=16000)
    finally:
        store.close()
    out: dict[str, list[str]] = {}
    for row in rows:
        out.setdefault(row["source"], []).append(row["id"])
    return {source: sorted(ids) for source, ids in out.items()}


def test_a_kill_while_a_changed_unchunkable_file_is_pending_keeps_its_indexed_version(tmp_path: Path) -> None:
    docs, index = tmp_path / "docs", tmp_path / "index"
    env = {"DOCSRAG_INGESTION__MAX_FILE_CHUNKS": "60", "DOCSRAG_INGESTION__BATCH_FILES": "4"}
    for n in range(15):
        write(docs / f"topic{n:02d}.md", topic(n))
    write(docs / KEEP, "# Keep me\n\nThe keepme flag sets the retention to 17 days.\n")
    first = run("ingest", str(docs), "--index", str(index), "-q", env=env)
    assert first.returncode == 0, first.stderr
    before = file_chunks(index)[KEEP]

    for n in range(15):
        write(docs / f"topic{n:02d}.md", topic(n, " Edited."))
    write(
        docs / KEEP,
        "# Keep me\n\n" + "".join(f"## Part {n}\n\n" + f"Filler sentence {n} about nothing much at all. " * 4 + "\n\n" for n in range(200)),
    )
    killed = run("ingest", str(docs), "--index", str(index), "-q", script=KILLED_AT_PENDING, env=env)
    assert killed.returncode == -9, killed.stderr

    resumed = run("ingest", str(docs), "--index", str(index), "-q", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"repaired: {KEEP}" in resumed.stdout
    kept = [line for line in resumed.stdout.splitlines() if line.startswith(f"skipped: {KEEP}:")]
    assert kept and kept[0].endswith("the previously indexed version is kept"), resumed.stdout
    assert file_chunks(index)[KEEP] == before, "the indexed version's chunks are all still there"
    answer = run("ask", "How many days of retention does the keepme flag set?", "--index", str(index), "--json")
    assert "17 days" in answer.stdout

    again = run("ingest", str(docs), "--index", str(index), "-q", env=env)  # said again until the file is fixed
    assert f"skipped: {KEEP}:" in again.stdout and "repaired:" not in again.stdout
    assert file_chunks(index)[KEEP] == before


def test_a_lost_or_emptied_store_is_refilled_by_the_next_ingest_and_doctor_says_so(settings, tmp_path: Path) -> None:
    from app.composition import build_ingestor, open_runtime
    from app.doctor import FAILED, OK, run_checks

    docs = tmp_path / "docs"
    for n in range(6):
        write(docs / f"topic{n}.md", topic(n))

    def ingest() -> tuple:
        runtime = open_runtime(settings)
        ingestor = build_ingestor(runtime)
        try:
            return ingestor.ingest(docs), runtime.store.count(), ingestor.state.manifest.all()
        finally:
            ingestor.close()
            runtime.close()

    report, full, records = ingest()
    assert len(report.ingested) == 6 and full > 0

    settings.storage.lite_file().unlink()  # the store file is lost; the manifest still lists every file
    [index_row] = [c for c in run_checks(settings) if c.name == "index"]
    assert index_row.result == FAILED and "missing chunks" in index_row.detail and "ingest" in index_row.fix
    report, count, _ = ingest()
    assert sorted(report.restored) == sorted(report.ingested) == [f"topic{n}.md" for n in range(6)]
    assert count == full

    runtime = open_runtime(settings)  # one file's rows deleted behind docsrag's back: only that file is ingested again
    try:
        runtime.store.delete_files([records[2].file_id])
    finally:
        runtime.close()
    report, count, _ = ingest()
    assert report.restored == report.ingested == [records[2].source] and count == full
    assert [c.result for c in run_checks(settings) if c.name == "index"] == [OK]


def test_a_second_ingest_through_serve_store_waits_its_turn_instead_of_undoing_the_first(tmp_path: Path) -> None:
    index = tmp_path / "index"
    first_docs, second_docs = tmp_path / "first", tmp_path / "second"
    for n in range(4):
        write(first_docs / f"a{n}.md", topic(n))
        write(second_docs / f"b{n}.md", topic(n + 10))
    server, uri = serve_store(index)
    env = {"DOCSRAG_STORAGE__URI": uri, "DOCSRAG_INGESTION__BATCH_FILES": "2"}
    first = subprocess.Popen(
        [sys.executable, "-c", PAUSED_AT_PENDING, "ingest", str(first_docs), "--index", str(index), "-q"],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _pending(index):
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.1)
        pending = _pending(index)
        assert pending, "the first ingest should be caught mid-batch"

        second = run("ingest", str(second_docs), "--index", str(index), "-q", env=env)
        assert second.returncode != 0
        assert "another ingest" in second.stderr and "repaired" not in second.stdout
        assert _pending(index) == pending, "the first ingest's batch is left alone"
    finally:
        first.kill()
        first.wait()
        server.terminate()
        server.wait(timeout=60)


def _pending(index: Path) -> list[str]:
    path = index / "state.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path) as conn:
            return sorted(row[0] for row in conn.execute("SELECT source FROM files WHERE state = 'pending'"))
    except sqlite3.OperationalError:
        return []


def test_a_renamed_folder_is_said_listed_and_forgotten_on_request(tmp_path: Path, capsys) -> None:
    from app.cli import main

    index, old, new = tmp_path / "index", tmp_path / "manual", tmp_path / "manual-v2"
    write(old / "timeout.md", "# Timeout\n\nThe request timeout is 30 seconds.\n")
    assert main(["ingest", str(old), "--index", str(index), "-q"]) == 0
    old.rename(new)
    write(new / "timeout.md", "# Timeout\n\nThe request timeout is 45 seconds.\n")
    capsys.readouterr()
    assert main(["ingest", str(new), "--index", str(index), "-q"]) == 0
    out = capsys.readouterr().out
    assert f"note: the index still holds 1 file(s) from {old}, which no longer exists; `python -m app forget {old}`" in out

    assert main(["sources", "--index", str(index)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and listed[0].endswith(f"{old}  (no longer exists)") and listed[1].endswith(str(new))

    assert main(["forget", str(old), "--index", str(index)]) == 0
    assert capsys.readouterr().out.startswith(f"removed 1 file(s) (1 chunks) from {old}")
    assert main(["sources", "--index", str(index)]) == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines()] == [str(new)]
    assert main(["ask", "What is the request timeout?", "--index", str(index), "--json"]) == 0
    answer = capsys.readouterr().out
    assert "45 seconds" in answer and "30 seconds" not in answer
    assert main(["forget", str(old), "--index", str(index)]) == 2
    assert "holds no files from" in capsys.readouterr().err
