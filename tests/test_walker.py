"""Real documentation trees as they ship: Sphinx builds, bad links, FIFOs, includes, long titles, huge files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_ingestion import GUIDE, _cli, _done_files, stored_sources, write

SECRET = "SECRET-OUTSIDE-7f3a"
LONG_TITLE = "Configuring the widget " + "with a very long heading " * 80  # over 2,000 characters

API_PAGE = """<html><head><title>API</title></head><body>
<div role="navigation">Contents | Index</div>
<div role="main"><section><h1>API reference</h1>
<p>The widget module opens sessions.</p>
<dl class="py function">
<dt class="sig sig-object py" id="widget.connect"><span class="sig-prename descclassname">widget.</span>
<span class="sig-name descname">connect</span>(<em>host</em>, <em>timeout=30</em>)
<a class="reference internal" href="_modules/widget.html#connect"><span class="viewcode-link">[source]</span></a>
<a class="headerlink" href="#widget.connect">¶</a></dt>
<dd><p>Open a session to <em>host</em>; gives up after <em>timeout</em> seconds.</p></dd>
</dl>
<dl class="py class">
<dt class="sig sig-object py" id="widget.Session"><em>class </em><span class="sig-prename descclassname">widget.</span>
<span class="sig-name descname">Session</span></dt>
<dd><p>A session with the widget daemon.</p>
<dl class="py method">
<dt class="sig sig-object py" id="widget.Session.close"><span class="sig-name descname">close</span>()</dt>
<dd><p>Close the session and release the socket.</p></dd>
</dl></dd>
</dl>
<iframe src="file:///etc/passwd"></iframe>
</section></div></body></html>
"""

INDEX_PAGE = """<html><body><div role="main"><h1>Widget documentation</h1>
<p>Welcome to the widget manual. The daemon listens on port 7070.</p></div></body></html>
"""

INDEX_RST = """Widget documentation
====================

Welcome to the widget manual. The daemon listens on port 7070.
"""

SPHINX_RST = """The widget module
=================

.. module:: widget
   :synopsis: Talk to the widget daemon.

.. include:: /etc/passwd

.. literalinclude:: ../../secret.md

Use :func:`widget.connect` to get a :class:`~widget.core.Session`, see :ref:`the timeout guide <timeouts>`.

.. note::

   Sessions are not thread-safe.

.. function:: connect(host, timeout=30)

   Open a session to *host*.

   .. versionchanged:: 2.1
      The *timeout* argument was added.

   Example::

      session = connect("localhost")

.. class:: Session

   A session with the daemon.

   .. method:: close()

      Close the session.

.. warning::

   Never share a session between processes.
"""


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A read that blocks (a FIFO, /dev/zero) fails the test instead of hanging it."""
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("ingestion blocked on a read"))
    signal.alarm(240)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def build_sphinx_tree(root: Path) -> Path:
    """A Sphinx HTML build as Debian ships it, plus the hostile files a shared folder can hold."""
    docs = root / "docs"
    html = docs / "html"
    write(html / "index.html", INDEX_PAGE)
    write(html / "api.html", API_PAGE)
    write(html / "_sources" / "index.rst.txt", INDEX_RST)
    write(html / "_sources" / "api.rst.txt", "API reference\n=============\n\nThe widget module opens sessions.\n")
    write(html / "_static" / "basic.css", "body { margin: 0 }")
    write(html / "_static" / "sphinx_highlight.js", "const x = 1;\n")
    (html / "_static" / "doctools.js").symlink_to("../../../missing/javascript/sphinxdoc/1.0/doctools.js")
    write(html / "searchindex.js", 'Search.setIndex({"docnames": ["api", "index"], "terms": {"widget": [0, 1]}})')
    write(html / "genindex.html", "<html><body><div role='main'><h1>Index</h1><p>connect() (in module widget)</p></div></body></html>")
    write(html / "search.html", "<html><body><div role='main'><h1>Search</h1><p>Please activate JavaScript.</p></div></body></html>")
    write(html / "py-modindex.html", "<html><body><div role='main'><h1>Python Module Index</h1><p>widget</p></div></body></html>")
    write(
        html / "_modules" / "widget.html",
        "<html><body><div role='main'><h1>Source code for widget</h1><pre>def connect(): ...</pre></div></body></html>",
    )
    (html / "objects.inv").write_bytes(b"# Sphinx inventory version 2\n")

    write(docs / "guide.md", GUIDE)
    (docs / "x.js").symlink_to("../missing/x.js")  # the repro: a dangling link outside any build folder
    (docs / "alias.md").symlink_to("guide.md")  # a link inside the folder: the file is indexed once
    write(docs / "sphinx.rst", SPHINX_RST)
    write(
        docs / "long.html",
        f"<html><body><main><h1>{LONG_TITLE}</h1><p>The long page says the cache size is 64 MB.</p></main></body></html>",
    )

    write(root / "secret.md", f"# Secret\n\n{SECRET} lives outside the ingested folder.\n")
    (docs / "outside.md").symlink_to(root / "secret.md")
    (docs / "passwd.txt").symlink_to("/etc/passwd")
    (docs / "zero.txt").symlink_to("/dev/zero")
    (docs / "loop.md").symlink_to("loop.md")
    (docs / "ping.md").symlink_to("pong.md")
    (docs / "pong.md").symlink_to("ping.md")
    (docs / "again").symlink_to(".")  # a folder loop
    os.mkfifo(docs / "fifo.md")
    (docs / "fifo-link.txt").symlink_to("fifo.md")
    return docs


def all_text(store) -> str:
    rows = store.client.query(store.collection_name, filter="", output_fields=["text", "section"], limit=10000)
    return "\n".join(f"{row.get('section', '')}\n{row['text']}" for row in rows)


def test_sphinx_build_and_hostile_links_each_behave_and_every_good_file_is_indexed_once(ingestor, runtime, tmp_path: Path) -> None:
    docs = build_sphinx_tree(tmp_path)

    report = ingestor.ingest(docs)

    assert sorted(report.ingested) == ["guide.md", "html/api.html", "html/index.html", "long.html", "sphinx.rst"]
    reasons = dict(report.skipped)
    assert set(reasons) == {
        "x.js",
        "outside.md",
        "passwd.txt",
        "zero.txt",
        "loop.md",
        "ping.md",
        "pong.md",
        "fifo.md",
        "fifo-link.txt",
    }, reasons
    assert "broken symbolic link" in reasons["x.js"]
    for name in ("outside.md", "passwd.txt", "zero.txt"):
        assert "outside the ingested folder" in reasons[name]
    for name in ("loop.md", "ping.md", "pong.md"):
        assert "loop" in reasons[name]
    assert "FIFO" in reasons["fifo.md"] and "FIFO" in reasons["fifo-link.txt"]
    # _sources (2, HTML beside them), _static (2 scripts, one a dangling link), _modules, searchindex.js, genindex,
    # search and py-modindex: counted, not listed
    assert report.ignored == 9
    assert "9 left out by ingestion.ignore" in report.summary()

    store = runtime.store
    rows = stored_sources(store)
    assert set(rows) == set(report.ingested)
    text = all_text(store)
    assert SECRET not in text and "root:x:0" not in text and "root:" not in text
    assert "Search.setIndex" not in text and "Please activate JavaScript" not in text
    sections = {row["section"] for row in rows["html/api.html"]}
    assert "API reference > widget.connect(host, timeout=30)" in sections
    assert "API reference > class widget.Session > close()" in sections
    assert "[source]" not in text
    long_sections = {row["section"] for row in rows["long.html"]}
    assert long_sections == {LONG_TITLE.strip()}, "the full title is kept for display"

    again = ingestor.ingest(docs)
    assert again.ingested == [] and sorted(again.unchanged) == sorted(report.ingested)


def test_sphinx_sources_are_read_as_rest_when_no_html_build_is_beside_them(ingestor, runtime, tmp_path: Path) -> None:
    sources = tmp_path / "docs" / "_sources"
    write(sources / "index.rst.txt", INDEX_RST)
    write(sources / "widget.rst.txt", SPHINX_RST)

    report = ingestor.ingest(tmp_path / "docs")

    assert sorted(report.ingested) == ["_sources/index.rst.txt", "_sources/widget.rst.txt"]
    rows = stored_sources(runtime.store)
    sections = {row["section"] for row in rows["_sources/widget.rst.txt"]}
    assert {"The widget module", "The widget module > connect(host, timeout=30)", "The widget module > Session > close()"} <= sections
    text = all_text(runtime.store)
    assert "Use widget.connect() to get a Session, see the timeout guide." in text
    assert ":func:" not in text and ".. function::" not in text and "root:" not in text and SECRET not in text


def test_a_file_changed_after_listing_is_skipped_for_this_run_and_ingested_by_the_next(ingestor, tmp_path: Path) -> None:
    from app.ingestion import IngestReport, read_file

    docs = tmp_path / "docs"
    write(docs / "notes.md", "# Notes\n\nShort notes.\n")
    ((path, record),) = ingestor.plan(docs, IngestReport()).todo
    write(docs / "notes.md", "# Notes\n\nThe notes grew after the folder was listed.\n")
    outcome = read_file(path, record)
    assert outcome.documents == [] and "changed since the folder was listed" in outcome.skip_reason
    assert ingestor.ingest(docs).ingested == ["notes.md"]


def test_steps_end_by_size_as_well_as_by_file_count(tmp_path: Path) -> None:
    from app.composition import build_ingestor, open_runtime
    from settings import load_settings

    docs = tmp_path / "docs"
    for n in range(3):
        write(docs / f"part{n}.md", f"# Part {n}\n\n" + f"Part {n} explains setting {n}. " * 80)
    settings = load_settings("local", storage={"index_dir": str(tmp_path / "index")}, ingestion={"batch_mb": 0.002})
    runtime = open_runtime(settings)
    ingestor = build_ingestor(runtime)
    steps: list[int] = []
    try:
        report = ingestor.ingest(docs, progress=lambda done, total, current: steps.append(done))
    finally:
        ingestor.close()
        runtime.close()
    assert len(report.ingested) == 3
    assert steps == [0, 1, 2, 3], "progress once before the first step, then each ~2.4 KB file is its own step under a 2 KB budget"


def test_oversized_and_pathological_files_are_bounded_and_the_rest_ingested(ingestor, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    write(docs / "deep.js", "const x = " + "[" * 2000 + "]" * 2000 + ";\n")  # 4 KB nested 2,000 levels
    write(docs / "nested.js", "const y = " + "[" * 1000 + "]" * 1000 + ";\n")
    (docs / "one-line.md").write_text("# One line\n\n" + "lorem ipsum dolor sit amet " * 250_000, encoding="utf-8")  # 6.7 MB

    started = time.perf_counter()
    report = ingestor.ingest(docs)

    assert sorted(report.ingested) == ["deep.js", "guide.md", "nested.js"]
    assert "max_file_chunks" in dict(report.skipped)["one-line.md"]
    counts = {record.source: record.chunks for record in ingestor.state.manifest.under_root(str(docs.resolve()))}
    assert counts["deep.js"] <= 10 and counts["nested.js"] <= 6, counts
    assert time.perf_counter() - started < 120


def test_grpc_log_lines_do_not_reach_the_terminal(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    # An unknown tracer name makes gRPC's C core print an E-level line at start-up, like its GOAWAY notices.
    result = _cli("ingest", str(docs), "--index", str(tmp_path / "index"), "-q", env={"GRPC_TRACE": "no_such_tracer"})
    assert result.returncode == 0, result.stderr
    assert "no_such_tracer" not in result.stderr and "E1" not in result.stderr, result.stderr


@pytest.mark.slow
def test_ctrl_c_prints_one_line_and_the_next_run_continues(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for n in range(40):
        write(docs / f"topic{n:02d}.md", f"# Topic {n}\n\n" + f"Topic {n} explains setting number {n} in detail. " * 40)
    index = tmp_path / "index"
    env = {**os.environ, "DOCSRAG_INGESTION__BATCH_FILES": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "app", "ingest", str(docs), "--index", str(index), "-q"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 180
    while time.time() < deadline and _done_files(index) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    assert line.startswith("interrupted: ") and line.endswith("files done, run again to continue")

    resumed = _cli("ingest", str(docs), "--index", str(index), "-q")
    assert resumed.returncode == 0, resumed.stderr
    assert _done_files(index) == 40


def test_chunker_bounds_long_lines_long_metadata_and_huge_files() -> None:
    from llama_index.core.schema import Document

    from app.chunking import CHARS_PER_TOKEN, LONG_LINE_CHARS, SHORT_SECTION_KEY, DocumentChunker

    chunker = DocumentChunker(chunk_size=128, chunk_overlap=32, max_file_chunks=5000)
    line = Document(text="word" * (LONG_LINE_CHARS // 2), metadata={"source": "min.md"})
    chunks = chunker([line])
    assert chunks and all(len(chunk.text) <= 128 * CHARS_PER_TOKEN for chunk in chunks)

    titled = Document(
        text="The cache size is 64 MB.",
        metadata={"source": "t.html", "file_name": "t.html", "section": LONG_TITLE},
        excluded_embed_metadata_keys=["source"],
    )
    (chunk,) = chunker([titled])
    assert chunk.metadata["section"] == LONG_TITLE, "the full path is kept for display"
    embedded = chunk.get_content(metadata_mode="embed")
    assert len(embedded) < 600 and chunk.metadata[SHORT_SECTION_KEY] in embedded and "64 MB" in embedded

    with pytest.raises(ValueError, match="max_file_chunks"):
        chunker([Document(text="lorem ipsum " * 400_000, metadata={"source": "huge.md"})])
