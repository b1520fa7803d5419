"""The scale paths: a local store server shared by processes, the Ray engine, and the guard rails of the embedded store."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from integrations.adapters.milvus_store import MilvusStore, StoreServer, StoreServerError, free_port
from integrations.hybrid_retriever import DENSE_FIELD, SPARSE_FIELD, MilvusHybridRetriever
from integrations.keyword_text import KEYWORD_FIELD, keyword_text
from integrations.node_ids import chunk_id, file_id, parse_chunk_id, piece_id
from settings import load_settings
from tests.conftest import REPO, serve_store

GUIDE = """# Widget guide

## Installing

Install the widget with `pip install widget`. The installer checks the Python version first.

## Configuring the timeout

The `--timeout` flag sets how long the widget waits for a reply, in seconds. The default timeout is 30 seconds.
"""

NEW_DOC = """# Zephyrine calibration

## Procedure

Calibrate the zephyrine sensor before first use: hold the reset button for five seconds until the lamp blinks twice.
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _nodes(rows: list[tuple[str, str]], seed: int = 7):
    """Chunk nodes with unit vectors, as the ingest pipeline writes them (source metadata, BM25 terms)."""
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode

    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((len(rows), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        TextNode(
            id_=chunk_id(file_id("docs", source), n, 0),
            text=text,
            metadata={"source": source, KEYWORD_FIELD: keyword_text(text)},
            embedding=vector.tolist(),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=piece_id(file_id("docs", source), n))},
        )
        for n, ((source, text), vector) in enumerate(zip(rows, vectors, strict=True))
    ]


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout
    )


# ---------------------------------------------------------------- guard rails


@pytest.fixture(params=["lite", "server"])
def any_store(request, tmp_path: Path):
    """The same collection in the embedded store and behind the local store server."""
    index = tmp_path / "index"
    if request.param == "lite":
        settings = load_settings("local", storage={"index_dir": str(index)})
        store = MilvusStore(settings, 384)
        yield store
        store.client.close()
        return
    with StoreServer(index / "milvus.db", port=free_port()) as server:
        settings = load_settings("local", storage={"index_dir": str(index), "uri": server.uri})
        store = MilvusStore(settings, 384)
        yield store
        store.client.close()


def test_filtered_query_returns_k_results_when_k_rows_match(any_store) -> None:
    # 1,200 chunks in 100 files; the filter keeps one file's 12 chunks, all containing the query's terms.
    # "file042.md#1.md" is named like a piece of file042.md: the filter must not leak it.
    text = "Topic {} paragraph {}: the widget timeout is set in the config file."
    rows = [(f"file{f:03d}.md", text.format(f, p)) for f in range(100) for p in range(12)]
    rows += [("file042.md#1.md", text.format(42, p)) for p in range(12)]
    any_store.add(_nodes(rows))
    k = 10
    retriever = MilvusHybridRetriever(
        store=any_store, embed_model=None, top_k=k, dense_top_k=k, sparse_top_k=k, file_ids=[file_id("docs", "file042.md")]
    )
    query = np.ones(384, dtype=np.float32) / np.sqrt(384)
    dense, sparse = (
        retriever._search([query.tolist()], DENSE_FIELD, "IP", k)[0],
        retriever._search([keyword_text("widget timeout config")], SPARSE_FIELD, "BM25", k)[0],
    )
    assert len(dense) == k and len(sparse) == k
    assert {parse_chunk_id(node_id)[0] for node_id, _, _ in dense + sparse} == {file_id("docs", "file042.md")}

    from llama_index.core.schema import QueryBundle

    fused = retriever.retrieve(QueryBundle("widget timeout config", embedding=query.tolist()))
    assert len(fused) == k and {n.node.metadata["source"] for n in fused} == {"file042.md"}
    # Exactly k rows match a two-file filter: all k come back.
    retriever.file_ids = [file_id("docs", "file007.md"), file_id("docs", "file099.md")]
    two = retriever._search([query.tolist()], DENSE_FIELD, "IP", 24)[0]
    assert len(two) == 24


def test_embedded_index_over_the_supported_size_warns_at_start_up(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    index = tmp_path / "index"
    settings = load_settings("local", storage={"index_dir": str(index), "lite_max_chunks": 20})
    store = MilvusStore(settings, 384)
    store.add(_nodes([("a.md", f"chunk {n}") for n in range(21)]))
    store.client.close()

    with caplog.at_level(logging.WARNING, logger="integrations.adapters.milvus_store"):
        reopened = MilvusStore(settings, 384)
    reopened.client.close()
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "21 chunks" in warning and "storage.lite_max_chunks" in warning and "serve-store" in warning

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="integrations.adapters.milvus_store"):
        MilvusStore(load_settings("local", storage={"index_dir": str(index), "lite_max_chunks": 21}), 384).client.close()
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]


# ---------------------------------------------------------------- store server


HOLDER = """
import sys
from settings import load_settings
from integrations.adapters.milvus_store import MilvusStore
store = MilvusStore(load_settings("local", storage={"index_dir": sys.argv[1]}), 384)
print("open", flush=True)
sys.stdin.read()
"""


def test_store_server_explains_a_locked_index_and_a_busy_port(tmp_path: Path) -> None:
    index = tmp_path / "index"
    holder = subprocess.Popen(  # another process (a page, an ingest) holds the embedded index
        [sys.executable, "-c", HOLDER, str(index)], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreServerError, match="another process has this index open"):
            StoreServer(index / "milvus.db", port=free_port()).start()
    finally:
        holder.communicate("", timeout=60)
    with StoreServer(index / "milvus.db", port=free_port()) as server:  # free again once that process is gone
        assert server.running()

    with StoreServer(tmp_path / "other" / "milvus.db", port=free_port()) as server:
        with pytest.raises(StoreServerError, match="already in use"):
            StoreServer(tmp_path / "third" / "milvus.db", port=server.port).start()
        assert server.running()
    assert not server.running()
    with pytest.raises(StoreServerError, match="loopback"):
        StoreServer(tmp_path / "x", host="0.0.0.0")


READER = textwrap.dedent(
    """
    import json, sys, time
    from app.composition import build_retriever, open_runtime
    from settings import load_settings

    runtime = open_runtime(load_settings("local"))
    retriever = build_retriever(runtime)
    print("READY", flush=True)
    queries, deadline = 0, time.time() + float(sys.argv[1])
    while time.time() < deadline:
        sources = [n.node.metadata["source"] for n in retriever.retrieve("zephyrine sensor calibration reset button")]
        queries += 1
        if "new/zephyrine.md" in sources:
            print(json.dumps({"seen_after_queries": queries, "at": time.time()}), flush=True)
            sys.exit(0)
        time.sleep(0.1)
    print(json.dumps({"seen_after_queries": None, "queries": queries}), flush=True)
    sys.exit(1)
    """
)


@pytest.mark.slow
def test_ingest_and_query_processes_share_the_store_server(tmp_path: Path) -> None:
    index = tmp_path / "index"
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    first = _cli("ingest", str(docs), "--index", str(index), "-q")  # an embedded index, later served as it is
    assert first.returncode == 0, first.stderr

    server, uri = serve_store(index)
    try:
        assert uri and uri.startswith("http://127.0.0.1:")
        env = {**os.environ, "DOCSRAG_STORAGE__URI": uri, "DOCSRAG_STORAGE__INDEX_DIR": str(index)}

        reader = subprocess.Popen(
            [sys.executable, "-c", READER, "150"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            assert reader.stdout.readline().strip() == "READY", reader.stderr.read()
            write(docs / "new" / "zephyrine.md", NEW_DOC)
            ingest = _cli("ingest", str(docs), "-q", env=env)  # while the reader keeps querying
            ingest_done = time.time()
            assert ingest.returncode == 0, ingest.stderr
            assert "1 ingested, 1 unchanged" in ingest.stdout
            out, err = reader.communicate(timeout=180)
        finally:
            if reader.poll() is None:
                reader.kill()
                reader.wait()
        assert reader.returncode == 0, f"the reader never saw the new document: {out} {err}"
        seen = json.loads(out.strip().splitlines()[-1])
        assert seen["seen_after_queries"] > 1, "the reader was querying while the ingest ran"
        assert seen["at"] >= ingest_done - 5
        assert "Traceback" not in err, err
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=90)
    assert server.returncode == 0, server.stderr.read()

    # Stopped cleanly: the embedded mode opens the same directory again with both files.
    store = MilvusStore(load_settings("local", storage={"index_dir": str(index)}), 384)
    try:
        rows = store.client.query(store.collection_name, filter="", output_fields=["source"], limit=100)
        assert {row["source"] for row in rows} == {"guide.md", "new/zephyrine.md"}
    finally:
        store.client.close()


# ---------------------------------------------------------------- Ray engine


def test_ray_engine_without_ray_names_the_file_to_install(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    code = (
        "import sys; sys.modules['ray'] = None; from app.cli import main; "
        f"sys.exit(main(['ingest', {str(docs)!r}, '--index', {str(tmp_path / 'index')!r}, '--engine', 'ray', '-q']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "requirements-scale.txt" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def ray_cluster():
    pytest.importorskip("ray", reason="the Ray engine needs requirements-scale.txt")
    import ray

    from app.ray_ingest import start_ray

    started = start_ray(num_cpus=2)
    yield
    if started:
        ray.shutdown()


def _chunks(store) -> list[tuple[str, str, str]]:
    rows = store.client.query(store.collection_name, filter="", output_fields=["id", "text", "source"], limit=16000)
    return sorted((row["id"], row["text"], row["source"]) for row in rows)


def _corpus(docs: Path) -> None:
    write(docs / "guide.md", GUIDE)
    write(docs / "notes.txt", "Plain notes about the widget cache. The cache lives in the home directory.")
    write(docs / "ref.rst", "Reference\n=========\n\nOptions\n-------\n\nThe verbose option prints more detail about every step.\n")
    write(
        docs / "api" / "index.html",
        "<html><body><div role='main'><h1>API</h1><p>The connect call opens a session.</p>"
        + "".join(f"<h2>Call {n}</h2><p>{f'Call {n} takes a host and a port and retries. ' * 30}</p>" for n in range(8))
        + "</div></body></html>",
    )
    write(docs / "tool.py", "def connect(host: str) -> None:\n    '''Open a session to host.'''\n    return None\n")
    write(docs / "broken.md", "")  # skipped by both engines


@pytest.mark.slow
def test_ray_engine_writes_the_same_chunks_as_the_default_engine(ray_cluster, tmp_path: Path) -> None:
    from app.composition import build_ingestor, open_runtime
    from app.ray_ingest import ray_ingest

    docs = tmp_path / "docs"
    _corpus(docs)
    runtimes = {
        engine: open_runtime(load_settings("local", storage={"index_dir": str(tmp_path / engine)})) for engine in ("default", "ray")
    }
    ingestors = {engine: build_ingestor(runtime) for engine, runtime in runtimes.items()}

    def both() -> dict:
        reports = {"default": ingestors["default"].ingest(docs), "ray": ray_ingest(ingestors["ray"], docs)}
        for report in reports.values():
            report.ingested.sort()
        return reports

    try:
        first = both()
        assert _chunks(runtimes["default"].store) == _chunks(runtimes["ray"].store)
        assert first["ray"].ingested == first["default"].ingested == ["api/index.html", "guide.md", "notes.txt", "ref.rst", "tool.py"]
        assert [s for s, _ in first["ray"].skipped] == [s for s, _ in first["default"].skipped] == ["broken.md"]
        assert first["ray"].chunks_written == first["default"].chunks_written > 10

        # Incremental: one file changed and shortened, one deleted, one added, the rest unchanged.
        write(docs / "guide.md", "# Widget guide\n\n## Installing\n\nInstall the widget with `pipx install widget`.\n")
        (docs / "notes.txt").unlink()
        write(docs / "new.md", NEW_DOC)
        second = both()
        assert _chunks(runtimes["default"].store) == _chunks(runtimes["ray"].store)
        for field in ("ingested", "removed", "chunks_written"):
            assert getattr(second["ray"], field) == getattr(second["default"], field), field
        assert second["ray"].ingested == ["guide.md", "new.md"] and second["ray"].removed == ["notes.txt"]
        assert sorted(second["ray"].unchanged) == sorted(second["default"].unchanged) == ["api/index.html", "ref.rst", "tool.py"]
        sources = {source for _, _, source in _chunks(runtimes["ray"].store)}
        assert "notes.txt" not in sources and "new.md" in sources

        # Nothing to do (a skipped file is retried every run, so it goes too): no Ray job at all, which takes seconds.
        (docs / "broken.md").unlink()
        third = ray_ingest(ingestors["ray"], docs)
        assert third.ingested == [] and third.skipped == [] and third.chunks_written == 0 and third.seconds < 2
        assert runtimes["ray"].store.count() == runtimes["default"].store.count()
    finally:
        for engine in ("default", "ray"):
            ingestors[engine].close()
            runtimes[engine].close()


def test_an_index_written_by_milvus_lite_3_is_refused_with_what_to_do(tmp_path: Path) -> None:
    from tests.test_ingestion import _cli

    index = tmp_path / "index"
    (index / "milvus.db" / "collections").mkdir(parents=True)  # Milvus Lite 3 kept a directory here
    result = _cli("ask", "What is the timeout?", "--index", str(index))
    assert result.returncode != 0
    assert f"Delete {index} and ingest the documents again" in result.stderr, result.stderr
    with pytest.raises(RuntimeError, match="older docsrag"):
        StoreServer(index / "milvus.db", port=free_port()).start()
