"""The example notebook runs top to bottom against a fresh index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_example_notebook_runs_and_answers_with_citations(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.chdir(REPO / "examples")
    notebook = json.loads((REPO / "examples" / "query_engine.ipynb").read_text(encoding="utf-8"))
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "query_engine.ipynb", "exec"), namespace)
    assert "python -m app ingest" in namespace["response"].response
    assert namespace["answer"].sources[0].file_name.endswith(".md")
    namespace["runtime"].vector_store.client.close()
