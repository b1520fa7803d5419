"""Ingestion over real files: formats, incremental updates, bad input, and a killed run."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import docfactory
from tests.conftest import REPO

GUIDE = """# Widget guide

## Installing

Install the widget with `pip install widget`. The installer checks the Python version first.

## Configuring the timeout

The `--timeout` flag sets how long the widget waits for a reply, in seconds. The default timeout is 30 seconds.
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def stored_sources(store) -> dict[str, list[dict]]:
    rows = store.client.query(store.collection_name, filter="", output_fields=["source", "section", "page", "page_label"], limit=10000)
    out: dict[str, list[dict]] = {}
    for row in rows:
        out.setdefault(row["source"], []).append(row)
    return out


def test_every_format_is_ingested_with_its_place_in_the_file(ingestor, runtime, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    write(docs / "notes.txt", "Plain notes about the widget cache. The cache lives in the home directory.")
    write(
        docs / "api.html",
        "<html><body><nav>Home | Next</nav><div role='main'><h1>API</h1><p>The connect call opens a session.</p></div></body></html>",
    )
    write(docs / "ref.rst", "Reference\n=========\n\nOptions\n-------\n\nThe verbose option prints more detail about every step.\n")
    write(docs / "tool.py", "def connect(host: str) -> None:\n    '''Open a session to host.'''\n    return None\n")
    docfactory.make_manual_pdf(docs / "manual.pdf")

    report = ingestor.ingest(docs)

    assert sorted(report.ingested) == ["api.html", "guide.md", "manual.pdf", "notes.txt", "ref.rst", "tool.py"]
    assert report.skipped == [] and report.removed == []
    rows = stored_sources(runtime.store)
    assert set(rows) == set(report.ingested)
    assert {r["section"] for r in rows["guide.md"]} >= {"Widget guide > Installing", "Widget guide > Configuring the timeout"}
    assert any(r.get("section") == "Reference > Options" for r in rows["ref.rst"])
    assert all(r.get("section", "").startswith("API") for r in rows["api.html"])
    pdf_pages = {(r["page"], r.get("page_label")) for r in rows["manual.pdf"]}
    assert all(page >= 1 for page, _ in pdf_pages)
    assert any(label and label != str(page) for page, label in pdf_pages), "printed page labels are kept"


def test_unchanged_folder_is_not_embedded_again(ingestor, tmp_path: Path, embedding_calls: list[int]) -> None:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    write(docs / "notes.txt", "Plain notes about the widget cache. The cache lives in the home directory.")
    first = ingestor.ingest(docs)
    assert sum(embedding_calls) == first.chunks_written > 0

    embedding_calls.clear()
    second = ingestor.ingest(docs)
    assert sum(embedding_calls) == 0
    assert second.chunks_written == 0
    assert sorted(second.unchanged) == ["guide.md", "notes.txt"]

    os.utime(docs / "guide.md")  # touched, same content: hashed, not embedded
    third = ingestor.ingest(docs)
    assert sum(embedding_calls) == 0 and third.ingested == []


def test_changed_file_replaces_its_chunks_and_deleted_file_disappears(ingestor, runtime, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    guide = write(docs / "guide.md", GUIDE)
    write(docs / "notes.txt", "Plain notes about the widget cache. The cache lives in the home directory.")
    ingestor.ingest(docs)
    before = runtime.store.count()

    write(
        guide, GUIDE.replace("30 seconds", "45 seconds") + "\n## Uninstalling\n\nRemove the widget with `pip uninstall widget` when done.\n"
    )
    (docs / "notes.txt").unlink()
    report = ingestor.ingest(docs)

    assert report.ingested == ["guide.md"] and report.removed == ["notes.txt"]
    rows = stored_sources(runtime.store)
    assert set(rows) == {"guide.md"}
    texts = [n.node.text for n in _retrieve(runtime, "default timeout seconds")]
    assert any("45 seconds" in t for t in texts) and not any("30 seconds" in t for t in texts)
    assert len(rows["guide.md"]) == 4  # title, two sections and the new one
    assert runtime.store.count() == 4 == before  # notes.txt's chunk is gone, one section came
    # BM25 forgets the deleted file too: a keyword only it contained finds nothing from it.
    assert all(n.node.metadata["source"] != "notes.txt" for n in _retrieve(runtime, "home directory cache"))


def _retrieve(runtime, question: str):
    from app.composition import build_retriever

    return build_retriever(runtime).retrieve(question)


def test_bad_files_are_skipped_with_reasons_and_the_rest_ingested(ingestor, tmp_path: Path, settings) -> None:
    docs = tmp_path / "docs"
    write(docs / "good.md", GUIDE)
    docfactory.make_empty_file(docs / "empty.pdf")
    docfactory.make_truncated_pdf(docs / "truncated.pdf")
    docfactory.make_encrypted_pdf(docs / "locked.pdf")
    docfactory.make_junk_pdf(docs / "junk.pdf")
    docfactory.make_binary_markdown(docs / "binary.md")
    docfactory.make_undecodable_text(docs / "latin.txt")
    big = docs / "huge.txt"
    big.write_bytes(b"word " * int(settings.ingestion.max_file_mb * 1024 * 1024 / 5 + 10))

    report = ingestor.ingest(docs)

    assert report.ingested == ["good.md"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"empty.pdf", "truncated.pdf", "locked.pdf", "junk.pdf", "binary.md", "latin.txt", "huge.txt"}
    assert "empty" in reasons["empty.pdf"].lower()
    assert "encrypted" in reasons["locked.pdf"].lower() or "password" in reasons["locked.pdf"].lower()
    assert "binary" in reasons["binary.md"].lower()
    assert "mb" in reasons["huge.txt"].lower()
    assert all(reason.strip() for reason in reasons.values())


def test_cli_prints_one_line_per_skipped_file_and_a_summary(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "good.md", GUIDE)
    docfactory.make_truncated_pdf(docs / "broken.pdf")
    result = _cli("ingest", str(docs), "--index", str(tmp_path / "index"), "-q")
    assert result.returncode == 0, result.stderr
    assert "skipped: broken.pdf:" in result.stdout
    assert "1 ingested, 0 unchanged, 1 skipped, 0 removed" in result.stdout


def _cli(*args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        **kwargs,
    )


@pytest.mark.slow
def test_killed_run_is_repaired_without_duplicate_or_missing_chunks(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for n in range(24):
        write(
            docs / f"topic{n:02d}.md",
            f"# Topic {n}\n\n"
            + "\n\n".join(f"## Part {p}\n\nTopic {n} part {p} explains setting number {n * 10 + p} in detail." for p in range(6)),
        )
    index = tmp_path / "index"
    env = {**os.environ, "DOCSRAG_INGESTION__BATCH_FILES": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "ingest", str(docs), "--index", str(index), "-q"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once some batches are committed, mid-run
        if _done_files(index) >= 4:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 4 <= _done_files(index) < 24, "the kill should land mid-run"

    resumed = _cli("ingest", str(docs), "--index", str(index), "-q", env={"DOCSRAG_INGESTION__BATCH_FILES": "2"})
    assert resumed.returncode == 0, resumed.stderr
    fresh = _cli("ingest", str(docs), "--index", str(tmp_path / "fresh"), "-q")
    assert fresh.returncode == 0, fresh.stderr

    resumed_ids = _chunk_ids(index)
    assert len(resumed_ids) == len(set(resumed_ids)), "no duplicate chunks"
    assert sorted(resumed_ids) == sorted(_chunk_ids(tmp_path / "fresh")), "same chunks as a run that was never killed"


def _done_files(index: Path) -> int:
    path = index / "state.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path) as conn:
            return conn.execute("SELECT COUNT(*) FROM files WHERE state = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _chunk_ids(index: Path) -> list[str]:
    from integrations.adapters.milvus_store import MilvusStore
    from settings import load_settings

    store = MilvusStore(load_settings("local", storage={"index_dir": str(index)}), 384)
    try:
        return [row["id"] for row in store.client.query(store.collection_name, filter="", output_fields=["id"], limit=16000)]
    finally:
        store.client.close()


def test_a_changed_file_that_cannot_be_chunked_keeps_its_indexed_version(tmp_path: Path) -> None:
    from app.composition import build_ingestor, open_runtime
    from settings import load_settings

    runtime = open_runtime(load_settings("local", storage={"index_dir": str(tmp_path / "index")}, ingestion={"max_file_chunks": 20}))
    ingestor = build_ingestor(runtime)
    try:
        docs = tmp_path / "docs"
        guide = write(docs / "guide.md", GUIDE)
        notes = write(docs / "notes.txt", "Plain notes about the widget cache. The cache lives in the home directory.")
        ingestor.ingest(docs)
        before = stored_sources(runtime.store)

        write(guide, GUIDE + "".join(f"\n## Part {n}\n\nFiller sentence number {n} about nothing much at all.\n" * 3 for n in range(60)))
        write(notes, "Plain notes: the widget cache now lives in the state directory.")
        report = ingestor.ingest(docs)  # one batch: the guide fails in the chunker, the notes go in
        assert report.ingested == ["notes.txt"]
        [(source, reason)] = report.skipped
        assert source == "guide.md" and "max_file_chunks" in reason and reason.endswith("the previously indexed version is kept")
        after = stored_sources(runtime.store)
        assert sorted(map(str, after["guide.md"])) == sorted(map(str, before["guide.md"]))
        assert any("30 seconds" in n.node.text for n in _retrieve(runtime, "default timeout seconds"))
        assert ingestor.ingest(docs).skipped == report.skipped  # said again until the file is fixed

        write(guide, GUIDE.replace("30 seconds", "45 seconds"))
        assert ingestor.ingest(docs).ingested == ["guide.md"]
        assert len(stored_sources(runtime.store)["guide.md"]) == len(before["guide.md"])  # replaced, not doubled
        texts = [n.node.text for n in _retrieve(runtime, "default timeout seconds")]
        assert any("45 seconds" in t for t in texts) and not any("30 seconds" in t for t in texts)
    finally:
        ingestor.close()
        runtime.close()


def test_an_ingest_whose_embeddings_are_refused_stops_with_one_message_and_keeps_committed_files(hf_env, tmp_path: Path, capsys) -> None:
    from app.cli import main
    from app.manifest import Manifest, state_file
    from tests.conftest_hf import FAKE_TOKEN

    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    assert main(["--profile", "hf_api", "ingest", str(docs), "-q"]) == 0
    write(docs / "notes.txt", "Plain notes about the widget cache. The cache lives in the home directory.")
    hf_env.state.tokens.clear()  # the token is no longer accepted: 401 on every embedding call
    capsys.readouterr()

    assert main(["--profile", "hf_api", "ingest", str(docs), "-q"]) == 1
    out, err = capsys.readouterr()
    assert "Traceback" not in err and err.startswith("error: embedding with the hf_api backend failed: Hugging Face embeddings")
    assert "HTTP 401" in err and "HF_TOKEN" in err and "stay indexed" in err
    manifest = Manifest(state_file(tmp_path / "index"))
    # Keywords first: notes.txt was committed (searchable by BM25) before the second pass failed to embed it.
    assert [(r.source, r.state) for r in manifest.all()] == [("guide.md", "done"), ("notes.txt", "done")]
    manifest.close()

    hf_env.state.tokens.add(FAKE_TOKEN)
    assert main(["--profile", "hf_api", "ingest", str(docs), "-q"]) == 0
    out, _ = capsys.readouterr()
    assert "0 ingested, 2 unchanged" in out and "1 embedded after they were searchable by keywords" in out

    one_pass = {"DOCSRAG_INGESTION__KEYWORDS_FIRST": "false"}  # embedding before storing: the failed batch stays out
    write(docs / "more.txt", "More notes about the widget cache. It is cleared on restart.")
    hf_env.state.tokens.clear()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in one_pass.items():
            patch.setenv(key, value)
        assert main(["--profile", "hf_api", "ingest", str(docs), "-q"]) == 1
        manifest = Manifest(state_file(tmp_path / "index"))
        assert "more.txt" not in [r.source for r in manifest.all() if r.state == "done"]
        manifest.close()
        hf_env.state.tokens.add(FAKE_TOKEN)
        capsys.readouterr()
        assert main(["--profile", "hf_api", "ingest", str(docs), "-q"]) == 0
        assert "1 ingested, 2 unchanged" in capsys.readouterr()[0]
