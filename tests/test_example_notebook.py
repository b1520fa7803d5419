"""The example notebook runs top to bottom in a Jupyter kernel started in examples/, against a fresh index."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import REPO

REPORT = """
import json, app
print(json.dumps({"answer": response.response, "first_source": answer.sources[0].file_name, "app": app.__file__}))
runtime.close()
"""


def installed_app(cwd: Path) -> Path | None:
    """Where a fresh interpreter outside the repository imports ``app`` from (None: the package is not installed)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    found = subprocess.run(
        [sys.executable, "-c", "import app; print(app.__file__)"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    return Path(found.stdout.strip()).parent.parent if found.returncode == 0 else None


@pytest.mark.slow
def test_example_notebook_runs_in_a_kernel_from_its_folder_and_answers_with_citations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install = installed_app(tmp_path)
    assert install is not None, "the docsrag package is not installed in this environment: run `make install` (pip install -e .)"
    monkeypatch.delenv("PYTHONPATH", raising=False)
    if install != REPO:  # a venv shared by several checkouts, installed from another one: run this checkout's code
        monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "index"))
    notebook = nbformat.read(REPO / "examples" / "query_engine.ipynb", as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "examples")}}).execute()

    report = json.loads(notebook.cells[-1].outputs[0]["text"])
    assert "python -m app ingest" in report["answer"] and re.search(r"\[\d+\]", report["answer"])
    assert report["first_source"].endswith(".md")
    assert Path(report["app"]).parent.parent == REPO
