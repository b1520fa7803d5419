"""Keywords first, meaning as it lands: chunks are searchable by BM25 once stored, embedded by a second pass that a kill
cannot corrupt, and the finished index is the one a one-pass ingest writes."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.composition import build_ingestor, build_query_engine, open_runtime
from app.manifest import Manifest, state_file
from settings import load_settings
from tests.conftest import REPO

# Runs `python -m app ARGS…` with a second pass of 4 rows per step that dies by SIGKILL before embedding its third step.
KILLED_IN_SECOND_PASS = """
import os, signal, sys
import app.ingestion as ingestion
original, steps = ingestion.embed_pending, []
def embed_then_die(store, embed, progress=None):
    def counted(nodes):
        steps.append(1)
        if len(steps) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return embed(nodes)
    return original(store, counted, batch=4, progress=progress)
ingestion.embed_pending = embed_then_die
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""
ROWS = ["id", "embedding", "text", "_node_content", "bm25_text"]


def corpus(docs: Path) -> Path:
    docs.mkdir(parents=True, exist_ok=True)
    for n in range(6):
        parts = "\n\n".join(f"## Part {p}\n\nTopic {n} part {p} explains setting {n * 10 + p} of the widget." for p in range(4))
        (docs / f"topic{n}.md").write_text(f"# Topic {n}\n\n{parts}\n", encoding="utf-8")
    (docs / "quokka.md").write_text("# Feeding\n\nThe quokka named Wendell eats fresh eucalyptus leaves at nine.\n", encoding="utf-8")
    return docs


def ingest(index: Path, docs: Path, **ingestion) -> None:
    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}, ingestion=ingestion))
    ingestor = build_ingestor(runtime)
    try:
        ingestor.ingest(docs)
    finally:
        ingestor.close()
        runtime.close()


def rows(index: Path) -> dict[str, dict]:
    """Every stored row by id, and the check that the store holds exactly the manifest's chunks, all with vectors."""
    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
    try:
        store = runtime.store
        found = store.client.query(store.collection_name, filter="", output_fields=ROWS, limit=10_000)
        manifest = Manifest(state_file(index), read_only=True)
        assert store.count() == len(found) == sum(record.chunks for record in manifest.all())
        assert all(record.state == "done" for record in manifest.all())
        manifest.close()
        assert store.pending_count() == 0
        return {row["id"]: row for row in found}
    finally:
        runtime.close()


def assert_same_index(two_pass: dict[str, dict], one_pass: dict[str, dict]) -> None:
    assert two_pass.keys() == one_pass.keys()
    for key, row in one_pass.items():
        other = two_pass[key]
        assert (other["text"], other["_node_content"], other["bm25_text"]) == (row["text"], row["_node_content"], row["bm25_text"])
        np.testing.assert_allclose(np.asarray(other["embedding"]), np.asarray(row["embedding"]), atol=1e-5)


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder for every index of this module: chunk ids (from the folder and path) are then comparable."""
    return corpus(tmp_path_factory.mktemp("docs"))


@pytest.fixture(scope="module")
def one_pass(docs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    index = tmp_path_factory.mktemp("one_pass") / "index"
    ingest(index, docs, keywords_first=False)
    return rows(index)


def test_chunks_answer_by_keywords_before_the_second_pass_and_end_as_a_one_pass_ingest(
    tmp_path: Path, docs: Path, one_pass: dict[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.ingestion

    index = tmp_path / "index"
    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
    ingestor = build_ingestor(runtime)
    try:
        with monkeypatch.context() as patch:  # the first pass alone, as a reader sees the index while the second runs
            patch.setattr(app.ingestion, "embed_pending", lambda *args, **kwargs: 0)
            first = ingestor.ingest(docs)
        stored = runtime.store.count()
        assert first.chunks_written == stored == runtime.store.pending_count() > 0

        engine = build_query_engine(runtime=runtime)
        response = engine.query("What does the quokka Wendell eat?")
        assert response.source_nodes[0].node.metadata["source"] == "quokka.md" and "eucalyptus" in str(response)
        assert response.source_nodes[0].node.metadata["dense_score"] is None, "no placeholder vector is searched by meaning"
        assert any(
            "0 % of passages have meaning vectors" in notice and "once an ingest of the folder embeds the rest" in notice
            for notice in response.metadata["notices"]
        ), "no ingest runs between the passes here: the notice says what embeds the rest"

        # Nothing changed: only the vectors are added, 4 per step; a question between two steps hears the time left.
        heard: list[list[str]] = []

        def ask_meanwhile(done: int, total: int) -> None:
            if done == 8:
                heard.append(engine.query("What does the quokka Wendell eat?").metadata["notices"])

        with monkeypatch.context() as patch:
            patch.setattr(app.ingestion, "embed_pending", functools.partial(app.ingestion.embed_pending, batch=4))
            second = ingestor.ingest(docs, vectors=ask_meanwhile)
        assert second.unchanged and not second.ingested and second.chunks_embedded == stored
        [notices] = heard
        share = 100 * 8 // stored
        assert any(
            f"{share} % of passages have meaning vectors so far; answers reach full quality once the ingest has embedded the "
            "rest (in about " in notice
            for notice in notices
        ), notices
        response = engine.query("What does the quokka Wendell eat?")
        assert response.source_nodes[0].node.metadata["dense_score"] is not None
        assert not any("meaning vectors" in notice for notice in response.metadata["notices"])
    finally:
        ingestor.close()
        runtime.close()
    assert_same_index(rows(index), one_pass)


def test_a_kill_in_the_second_pass_is_finished_by_the_next_run(tmp_path: Path, docs: Path, one_pass: dict[str, dict]) -> None:
    index = tmp_path / "index"
    command = ["ingest", str(docs), "--index", str(index), "-q"]
    env = {**os.environ, "DOCSRAG_INGESTION__BATCH_FILES": "2"}
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_SECOND_PASS, *command], cwd=REPO, env=env, capture_output=True, timeout=300)
    assert killed.returncode == -9, killed.stderr

    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
    try:
        left, stored = runtime.store.pending_count(), runtime.store.count()
    finally:
        runtime.close()
    assert stored == len(one_pass) and left == stored - 8, "every file committed, two steps of four rows embedded"

    resumed = subprocess.run([sys.executable, "-m", "app", *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "0 ingested" in resumed.stdout and "repaired" not in resumed.stdout
    assert_same_index(rows(index), one_pass)


def test_the_second_pass_is_shown_and_timed_by_its_chunks() -> None:
    from app.ingest_progress import IngestProgress

    now = [0.0]
    progress = IngestProgress(batch_files=2, clock=lambda: now[0])
    progress.planned([1000, 1000])
    progress.files(2, 2, "b.md")  # the first pass: both files searchable by keywords after 10 s
    now[0] = 10.0
    assert progress.fraction() == 1.0
    progress.vectors(0, 400)
    now[0] = 40.0
    progress.vectors(100, 400)  # a quarter embedded in 30 s: 90 s left
    assert progress.fraction() == 0.25 and progress.seconds_left() == 90.0
    assert progress.text() == "2 files searchable by keywords · 100 of 400 chunks embedded · about 1 min 30 s left"
