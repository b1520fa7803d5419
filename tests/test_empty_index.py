"""A missing or empty index is a one-line message that names the fix, and nothing is created; README's snippet works
from any folder."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.composition import build_query_engine
from settings import load_settings
from tests.test_ingestion import _cli, write

#: README's Python snippet, as written there.
SNIPPET = re.search(r"```python\n(.*?)```", (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8"), re.S)


INGESTING = """# Ingesting documents

## Ingesting a folder

To ingest a folder of documents, run `python -m app ingest PATH`. Unchanged files are skipped on the next run.
"""


def _files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_ask_on_a_missing_index_exits_with_one_line_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    result = _cli("ask", "How do I install the widget?", "--index", str(missing))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: No index at {missing}: ingest your documents first with `python -m app ingest PATH` (add `--index {missing}`)."
    ]
    assert not (tmp_path / "no").exists()


def test_ask_on_an_index_with_no_documents_names_the_fix(tmp_path: Path) -> None:
    index = tmp_path / "index"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _cli("ingest", str(empty), "--index", str(index), "--quiet").returncode == 0  # an index with no file in it
    before = _files_under(index)
    result = _cli("ask", "How do I install the widget?", "--index", str(index))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "has no documents yet" in result.stderr and "python -m app ingest PATH" in result.stderr
    sidecars = re.compile(r"-(wal|shm)$")  # SQLite's own while a reader has the manifest open (WAL mode)
    assert [f for f in _files_under(index) if not sidecars.search(f)] == before


def test_ingest_of_a_missing_folder_creates_nothing(tmp_path: Path) -> None:
    result = _cli("ingest", str(tmp_path / "nope"), "--index", str(tmp_path / "index"))
    assert result.returncode == 2 and "nope does not exist" in result.stderr
    assert not (tmp_path / "index").exists()


def test_the_python_engine_on_a_missing_index_answers_with_the_line_sync_and_async(tmp_path: Path) -> None:
    settings = load_settings(storage={"index_dir": str(tmp_path / "index")})
    engine = build_query_engine(settings)
    for response in (engine.query("How do I install the widget?"), asyncio.run(engine.aquery("How do I install the widget?"))):
        assert response.response.startswith(f"No index at {tmp_path / 'index'}") and response.source_nodes == []
        assert response.metadata["empty_index"]
    assert not (tmp_path / "index").exists()


@pytest.mark.slow
def test_readme_snippet_works_from_any_folder(tmp_path: Path) -> None:
    assert SNIPPET, "README has a python snippet"
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "user_data")}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run_snippet() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", SNIPPET.group(1)], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)

    empty = run_snippet()
    assert empty.returncode == 0 and empty.stderr == "", empty.stderr
    assert empty.stdout.strip().splitlines() == [
        f"No index at {tmp_path / 'user_data' / 'docsrag' / 'index'}: ingest your documents first with `python -m app ingest PATH` "
        f"(add `--index {tmp_path / 'user_data' / 'docsrag' / 'index'}`)."
    ]
    assert _files_under(elsewhere) == [] and not (tmp_path / "user_data").exists()

    docs = write(tmp_path / "docs" / "ingesting.md", INGESTING).parent
    ingest = subprocess.run(
        [sys.executable, "-m", "app", "ingest", str(docs), "--quiet"], cwd=tmp_path / "docs", env=env, capture_output=True, text=True
    )
    assert ingest.returncode == 0, ingest.stderr
    answered = run_snippet()
    assert answered.returncode == 0, answered.stderr
    assert "python -m app ingest PATH" in answered.stdout and "[1]" in answered.stdout
    assert _files_under(elsewhere) == []
