"""The command line: input checked before any work, honest progress, and commands that import only what they use."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_ingestion import GUIDE, _cli, write

HEAVY = ("llama_index", "pymilvus", "onnxruntime", "pandas")
# Runs `python -m app ARGS` in-process and prints which heavy packages it imported.
_IMPORTS = (
    "import sys\n"
    "from app.cli import main\n"
    "try:\n    main(sys.argv[1:])\n"
    "except SystemExit:\n    pass\n"
    f"print('IMPORTED', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))\n"
)


def imported_by(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _IMPORTS, *args], cwd=REPO, capture_output=True, text=True, timeout=120)
    line = next(line for line in out.stdout.splitlines() if line.startswith("IMPORTED"))
    return eval(line.removeprefix("IMPORTED "))  # a printed list of names


@pytest.mark.parametrize("question", ["", "   ", "\n\t"])
def test_an_empty_question_is_a_usage_error_and_nothing_is_opened(tmp_path: Path, question: str) -> None:
    index = tmp_path / "index"
    result = _cli("ask", question, "--index", str(index))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "usage: python -m app ask" in result.stderr and "the question is empty" in result.stderr
    assert result.stdout == "" and not index.exists()


def test_ingest_of_a_missing_folder_prints_its_error_and_no_progress_bar(tmp_path: Path) -> None:
    result = _cli("ingest", str(tmp_path / "nowhere"), "--index", str(tmp_path / "index"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {tmp_path / 'nowhere'} does not exist: give a folder or file to ingest"]


def test_ingest_progress_counts_bytes_files_and_chunks(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    for n in range(3):
        write(docs / f"guide{n}.md", GUIDE.replace("Widget", f"Widget{n}"))
    result = _cli("ingest", str(docs), "--index", str(tmp_path / "index"), env={"DOCSRAG_INGESTION__BATCH_FILES": "1"})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.replace("\r", "\n").strip().splitlines()
    reading = [line for line in lines if line.startswith("ingesting: 100%")][-1]
    size = sum(p.stat().st_size for p in docs.iterdir())
    assert "3/3 files" in reading and " chunks]" in reading, reading
    assert f"| {size}/{size} [" in reading, (size, reading)  # the bytes of the three files, known before the first was read
    # Then the second pass: the chunks stored with their keywords first, embedded (their total known from its start).
    chunks = re.search(r"\((\d+) chunks written, \1 embedded after they were searchable by keywords", result.stdout)
    assert chunks, result.stdout
    assert lines[-1].startswith(f"embedding: 100%|██████████| {chunks[1]}/{chunks[1]} ["), lines[-1]


@pytest.mark.parametrize("args", [["--help"], ["config"], ["usage"], ["gaps"], ["ask", ""]])
def test_commands_that_need_no_index_search_import_no_llamaindex(tmp_path: Path, args: list[str]) -> None:
    if args[0] != "--help":
        args = [*args, "--index", str(tmp_path / "index")]
    assert imported_by(*args) == []


def test_import_app_loads_no_llamaindex_and_still_offers_the_engine() -> None:
    code = (
        "import sys, app\n"
        "from app import build_query_engine, open_runtime\n"
        "print('llama_index' in sys.modules, callable(build_query_engine) and callable(open_runtime))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["False", "True"], out.stderr


def test_a_runtime_that_fails_after_starting_the_index_server_releases_the_index(settings, tmp_path: Path) -> None:
    from app.composition import build_ingestor, open_runtime

    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    runtime = open_runtime(settings)
    build_ingestor(runtime).ingest(docs)
    runtime.close()

    broken = settings.model_copy(deep=True)
    broken.rerank.backend = "local"  # without rerank.model_dir: fails after the Milvus Lite server was started
    with pytest.raises(ValueError, match=r"rerank\.model_dir"):
        open_runtime(broken)
    runtime = open_runtime(settings)  # the lock and the server were released
    try:
        assert runtime.store.count() > 0
    finally:
        runtime.close()


def test_ask_gives_each_source_the_deep_link_the_page_shows(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    guide = write(docs / "guide.md", GUIDE)
    index = str(tmp_path / "index")
    assert _cli("ingest", str(docs), "--index", index, "-q").returncode == 0
    question = "What is the default timeout of the widget?"

    out = _cli("ask", question, "--index", index, "--json")
    [source] = [s for s in json.loads(out.stdout)["sources"] if s["cited"]]
    assert source["url"] == guide.resolve().as_uri() + "#configuring-the-timeout"  # the file, at its section
    assert f"      {source['url']}\n" in _cli("ask", question, "--index", index).stdout

    published = _cli("ask", question, "--index", index, "--json", env={"DOCSRAG_SOURCES__BASE_URL": "https://docs.example.org/widget/"})
    [source] = [s for s in json.loads(published.stdout)["sources"] if s["cited"]]
    assert source["url"] == "https://docs.example.org/widget/guide.html#configuring-the-timeout"
