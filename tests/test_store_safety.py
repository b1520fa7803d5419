"""The index against hostile file names, folders that share paths, a shared index's lock, and files that turn bad.

Real files, real Milvus Lite, and the real store server (``serve-store``).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.ingestion import readable_name
from app.manifest import Manifest, OldIndexError
from integrations.adapters.milvus_store import (
    MilvusStore,
    StoreServer,
    claim_index,
    embedded_file,
    free_port,
    ingest_store,
    lock_path,
    release_lite_store,
)
from settings import load_settings
from tests.conftest import serve_store

NORMAL = {
    "guide.md": "# Widget guide\n\n## Timeout\n\nThe default widget timeout is 30 seconds.\n",
    "notes.txt": "Plain notes: the widget cache lives in the home directory.\n",
    "api.rst": "API\n===\n\nThe connect call opens a session to the widget daemon.\n",
}
NORMAL_QUESTIONS = {"guide.md": "default widget timeout", "notes.txt": "widget cache home directory", "api.rst": "connect call session"}
HOSTILE_NAMES = [
    "x') OR 1 OR ('.md",
    "user's guide.md",
    'say "hi".md',
    'x" or 1 or ".md',
    "back\\slash.md",
    "100% done.md",
    "under_score%.txt",
    "new\nline.md",
    os.fsdecode(b"caf\xe9 latin1.md"),  # not UTF-8: a surrogate escape in Python
    "guide.md#0.md",
    "api.rst#1:0.md",
    "] or [.md",
]

TOPICS = [
    "amberlith",
    "brontide",
    "cryolume",
    "dervish",
    "eskerine",
    "fulgurite",
    "gallimaufry",
    "hexaprism",
    "isobath",
    "jacquard",
    "kestrel",
    "lodestar",
]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(params=["lite", "server"])
def store_settings(request, tmp_path: Path) -> Iterator:
    """Settings for an index opened embedded, or served by the store server."""
    index = tmp_path / "index"
    if request.param == "lite":
        yield load_settings("local", storage={"index_dir": str(index)})
        return
    with StoreServer(index / "milvus.db", port=free_port()) as server:
        yield load_settings("local", storage={"index_dir": str(index), "uri": server.uri})


@pytest.fixture
def opened(store_settings) -> Iterator:
    from app.composition import build_ingestor, open_runtime

    runtime = open_runtime(store_settings)
    ingestor = build_ingestor(runtime)
    yield runtime, ingestor
    ingestor.close()
    runtime.close()


def manifest_chunks(ingestor) -> int:
    return sum(record.chunks for record in ingestor.state.manifest.all())


def top_sources(runtime, question: str, sources: list[str] | None = None) -> list[str]:
    from app.composition import build_retriever

    return [n.node.metadata["source"] for n in build_retriever(runtime, sources).retrieve(question)]


def test_hostile_file_names_cannot_corrupt_the_index(opened, tmp_path: Path) -> None:
    runtime, ingestor = opened
    docs = tmp_path / "docs"
    for name, text in NORMAL.items():
        write(docs / name, text)
    first = ingestor.ingest(docs)
    assert sorted(first.ingested) == sorted(NORMAL)
    normal_chunks = runtime.store.count()

    for n, name in enumerate(HOSTILE_NAMES):  # into the existing index, next to the normal files
        write(docs / name, f"# Hostile {n}\n\nThe {TOPICS[n]} setting is described in this file.\n")
    second = ingestor.ingest(docs)

    assert second.skipped == [] and second.removed == [] and len(second.ingested) == len(HOSTILE_NAMES)
    assert sorted(second.unchanged) == sorted(NORMAL)
    assert runtime.store.count() == manifest_chunks(ingestor) == normal_chunks + len(HOSTILE_NAMES)
    for name, question in NORMAL_QUESTIONS.items():
        assert top_sources(runtime, question)[0] == name
    shown = {record.source for record in ingestor.state.manifest.all()}
    assert "caf\ufffd latin1.md" in shown and "new\\nline.md" in shown and "user's guide.md" in shown
    # Each hostile file answers for itself, also when the search is restricted to it by its name.
    for n, name in enumerate(HOSTILE_NAMES):
        assert top_sources(runtime, f"{TOPICS[n]} setting")[0] == readable_name(name)
        assert set(top_sources(runtime, f"{TOPICS[n]} setting", sources=[readable_name(name)])) == {readable_name(name)}

    third = ingestor.ingest(docs)  # a no-op
    assert third.ingested == [] and third.chunks_written == 0 and len(third.unchanged) == len(NORMAL) + len(HOSTILE_NAMES)

    (docs / HOSTILE_NAMES[0]).unlink()  # a removal by name deletes that file's chunks only
    fourth = ingestor.ingest(docs)
    assert fourth.removed == [HOSTILE_NAMES[0]]
    assert runtime.store.count() == manifest_chunks(ingestor) == normal_chunks + len(HOSTILE_NAMES) - 1


def test_two_folders_with_the_same_paths_both_stay(opened, tmp_path: Path) -> None:
    from app.ui.uploads import store_upload, uploads_dir

    runtime, ingestor = opened
    write(tmp_path / "alpha" / "README.md", "# Alpha\n\nThe alpha project uses the quasar scheduler.\n")
    write(tmp_path / "beta" / "README.md", "# Beta\n\nThe beta project uses the nebula scheduler.\n")
    assert ingestor.ingest(tmp_path / "alpha").ingested == ["README.md"]
    second = ingestor.ingest(tmp_path / "beta")
    assert second.ingested == ["beta/README.md"] and second.removed == []
    assert second.renamed == [("README.md", "beta/README.md")]  # told, so the page and CLI can say so

    # A page upload of the same name is a third file: the uploads folder is its own root.
    store_upload(runtime.settings, "README.md", b"# Upload\n\nThe uploaded notes mention the pulsar scheduler.\n")
    third = ingestor.ingest(uploads_dir(runtime.settings).resolve())
    assert third.ingested == ["uploads/README.md"] and third.removed == []

    assert top_sources(runtime, "quasar scheduler")[0] == "README.md"
    assert top_sources(runtime, "nebula scheduler")[0] == "beta/README.md"
    assert top_sources(runtime, "pulsar scheduler")[0] == "uploads/README.md"
    assert runtime.store.count() == manifest_chunks(ingestor) == 3
    assert ingestor.ingest(tmp_path / "alpha").unchanged == ["README.md"]  # each folder's re-ingest sees only its files
    assert ingestor.ingest(tmp_path / "beta").unchanged == ["beta/README.md"]


def test_one_place_tells_an_embedded_file_from_a_server(tmp_path: Path) -> None:
    """milvus_store.embedded_file: a path is an embedded Milvus Lite file (locked, its server run here); a server URL or
    the Unix socket of an ingest's Lite server is opened as a server (no lock, nothing to start or release)."""
    assert embedded_file(str(tmp_path / "milvus.db")) == tmp_path / "milvus.db"
    assert embedded_file("relative/milvus.db") == Path("relative/milvus.db")
    for uri in ("http://127.0.0.1:19530", "https://in01.zillizcloud.com", "tcp://milvus:19530", "unix:/tmp/milvus.sock"):
        assert embedded_file(uri) is None, uri
    settings = load_settings("local", storage={"index_dir": str(tmp_path / "index"), "uri": "unix:/nonexistent.sock"})
    claim_index(settings)  # takes no lock and creates nothing for a server
    release_lite_store(settings)
    assert not (tmp_path / "index").exists() and ingest_store(settings) is None


def test_a_failed_open_beside_the_store_server_keeps_its_lock(tmp_path: Path) -> None:
    index = tmp_path / "index"
    server, _ = serve_store(index)
    try:
        settings = load_settings("local", storage={"index_dir": str(index)})
        for _ in range(2):  # a direct `ask --index` fails, and so does the next one: the lock is still there
            with pytest.raises(RuntimeError) as failed:
                MilvusStore(settings, 384)
            assert lock_path(index / "milvus.db").exists()
            assert "serve-store" in str(failed.value)
        assert server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=60)
    assert server.returncode == 0, server.stderr.read()
    store = MilvusStore(load_settings("local", storage={"index_dir": str(index)}), 384)  # free once the server stopped
    store.client.close()


def test_the_milvus_server_stops_when_serve_store_is_killed(tmp_path: Path) -> None:
    server, _ = serve_store(tmp_path / "index")
    children = [int(pid) for pid in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
    assert children, "serve-store runs the Milvus binary as its child"
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    deadline = time.time() + 20
    while time.time() < deadline and any(map(running, children)):
        time.sleep(0.2)
    assert not any(map(running, children)), "the Milvus server saw the lock released and stopped"


def running(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's exit may wait for a reaper that never comes in a container)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_index_flag_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "from-env"))
    assert load_settings("local").storage.index_dir == tmp_path / "from-env"
    assert load_settings("local", storage={"index_dir": str(tmp_path / "flag")}).storage.index_dir == tmp_path / "flag"


def test_a_changed_file_that_cannot_be_read_keeps_its_indexed_version(ingestor, runtime, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    guide = write(docs / "guide.md", NORMAL["guide.md"])
    ingestor.ingest(docs)
    before = runtime.store.count()

    write(guide, "   \n")  # now empty: skipped
    report = ingestor.ingest(docs)
    assert report.skipped == [("guide.md", "empty file; the previously indexed version is kept")]
    assert runtime.store.count() == before
    assert top_sources(runtime, "default widget timeout") == ["guide.md"]
    assert ingestor.ingest(docs).skipped == report.skipped  # said again until the file is fixed

    write(guide, NORMAL["guide.md"].replace("30 seconds", "45 seconds"))
    assert ingestor.ingest(docs).ingested == ["guide.md"]
    from app.composition import build_retriever

    texts = [n.node.text for n in build_retriever(runtime).retrieve("default widget timeout")]
    assert any("45 seconds" in t for t in texts) and not any("30 seconds" in t for t in texts)


def test_nul_bytes_never_reach_a_chunk(ingestor, runtime, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    filler = "".join(f"Paragraph {n} talks about the widget in general terms.\n\n" for n in range(200))  # > 8 KB of text first
    write(docs / "late.md", f"# Late\n\n{filler}## Nul\n\nThe nul\x00byte sits inside the gadget sentence.\n")
    assert ingestor.ingest(docs).ingested == ["late.md"]
    store = runtime.store
    rows = store.client.query(store.collection_name, filter="", output_fields=["text", "section"], limit=1000)
    assert rows and not any("\x00" in str(row.get("text")) + str(row.get("section")) for row in rows)
    assert any("nulbyte sits inside the gadget" in row["text"] for row in rows)


def test_an_index_with_name_based_ids_is_refused_with_what_to_do(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    with sqlite3.connect(index / "state.sqlite") as conn:  # the manifest as earlier versions wrote it
        conn.execute(
            "CREATE TABLE files (source TEXT PRIMARY KEY, root TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, fmt TEXT NOT NULL, pieces INTEGER NOT NULL, chunks INTEGER NOT NULL, "
            "state TEXT NOT NULL, ingested_at REAL NOT NULL)"
        )
    with pytest.raises(OldIndexError, match="Ingest the documents again into a new index"):
        MilvusStore(load_settings("local", storage={"index_dir": str(index)}), 384)
    with pytest.raises(OldIndexError):
        Manifest(index / "state.sqlite")
