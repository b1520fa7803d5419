"""Questions from other processes while an ingest writes an embedded index: no lock error, nothing half-written cited."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from app.composition import build_query_engine, open_runtime
from app.manifest import Manifest, state_file
from settings import load_settings
from tests.conftest import REPO

# Runs `python -m app ARGS…`; its second batch stops after its chunks are in the store, before the manifest marks it
# done, until the file named by $RESUME exists ($PAUSED is created when it stops).
PAUSED_AFTER_WRITE = """
import os, sys, time
from pathlib import Path
from integrations.adapters.milvus_store import MilvusStore
original, calls = MilvusStore.chunk_counts, []
def counted_then_wait(store, file_ids):
    calls.append(1)
    if len(calls) == 2:
        Path(os.environ["PAUSED"]).touch()
        deadline = time.time() + 180
        while not Path(os.environ["RESUME"]).exists() and time.time() < deadline:
            time.sleep(0.05)
    return original(store, file_ids)
MilvusStore.chunk_counts = counted_then_wait
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""
DIAL = "# Frobnicator\n\nThe frobnicator is calibrated by turning the brass dial clockwise until the green lamp glows.\n"
QUOKKA = "# Quokka feeding\n\nThe quokka named Wendell eats fresh eucalyptus leaves every morning at nine.\n"


def ask(index: Path, question: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "app", "ask", question, "--index", str(index), "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def cited(answer: dict) -> set[str]:
    return {source["source"] for source in answer["sources"] if source["cited"]}


def shown(answer: dict) -> set[str]:
    return {source["source"] for source in answer["sources"]}


def test_questions_from_other_processes_are_answered_from_committed_files_while_an_ingest_writes(tmp_path: Path) -> None:
    docs, index = tmp_path / "docs", tmp_path / "index"
    docs.mkdir()
    (docs / "a_dial.md").write_text(DIAL)
    (docs / "b_quokka.md").write_text(QUOKKA)
    paused, resume = tmp_path / "paused", tmp_path / "resume"
    env = {**os.environ, "DOCSRAG_INGESTION__BATCH_FILES": "1", "PAUSED": str(paused), "RESUME": str(resume)}
    ingest = subprocess.Popen(
        [sys.executable, "-c", PAUSED_AFTER_WRITE, "ingest", str(docs), "--index", str(index), "-q"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    reader = None
    try:
        deadline = time.time() + 180
        while not paused.exists():
            assert ingest.poll() is None, ingest.stderr.read()
            assert time.time() < deadline, "the ingest should stop in its second batch"
            time.sleep(0.1)
        manifest = Manifest(state_file(index), read_only=True)
        before = {record.source: record.state for record in manifest.all()}
        manifest.close()
        assert before == {"a_dial.md": "done", "b_quokka.md": "pending"}

        answer = ask(index, "How is the frobnicator calibrated?")
        assert cited(answer) == {"a_dial.md"} and "brass dial" in answer["answer"]
        assert any("An ingest is writing this index" in notice and "1 file committed" in notice for notice in answer["notices"])
        half_written = ask(index, "What does the quokka Wendell eat?")
        assert "b_quokka.md" not in shown(half_written), "a file whose batch is not committed is never shown"

        # The Python engine, sync and async, reads through the same store.
        settings = load_settings("local", storage={"index_dir": str(index)})
        reader = open_runtime(settings, reader=True)
        assert reader.settings.storage.uri.startswith("unix:") and not reader.stale()
        engine = build_query_engine(runtime=reader)
        assert {n.node.metadata["source"] for n in engine.query("What does the quokka Wendell eat?").source_nodes} <= {"a_dial.md"}
        response = asyncio.run(engine.aquery("How is the frobnicator calibrated?"))
        assert "brass dial" in str(response) and response.source_nodes[0].node.metadata["source"] == "a_dial.md"

        manifest = Manifest(state_file(index), read_only=True)
        assert {record.source: record.state for record in manifest.all()} == before, "readers wrote nothing to the manifest"
        manifest.close()
        resume.touch()
        assert ingest.wait(timeout=180) == 0, ingest.stderr.read()
        assert reader.stale(), "the ingest's store stopped with it: the page opens its runtime again"
    finally:
        if reader is not None:
            reader.close()
        ingest.kill()
        ingest.wait()

    after = ask(index, "What does the quokka Wendell eat?")
    assert cited(after) == {"b_quokka.md"} and not any("ingest" in notice for notice in after["notices"])


def test_an_ingest_left_behind_by_a_killed_run_is_not_read_through(tmp_path: Path) -> None:
    """A lock file naming a dead ingest and its socket: the index is opened as usual."""
    from app.writer_lock import current_writer, lock_file
    from integrations.adapters.milvus_store import ingest_store

    index = tmp_path / "index"
    index.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    lock_file(index).write_text(f"pid {dead}\nstore unix:{tmp_path / 'gone.sock'}\n")
    assert current_writer(index) is None
    assert ingest_store(load_settings("local", storage={"index_dir": str(index)})) is None
