"""Every broken or busy file the index owns gets one clear line naming it and the fix, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

OPEN_RUNTIME = """
import sys
from app.composition import open_runtime
from settings import load_settings
try:
    open_runtime(load_settings("local", storage={"index_dir": sys.argv[1]}))
except RuntimeError as exc:
    print("refused:", exc)
print("model loaded:", "onnxruntime" in sys.modules)
"""


def run(*args: str, script: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", script] if script else [sys.executable, "-m", "app"]
    return subprocess.run([*command, *args], cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=300)


def test_a_locked_index_is_refused_before_any_model_loads(runtime, settings) -> None:
    opened = run(str(settings.storage.index_dir), script=OPEN_RUNTIME)  # this test process holds the embedded index
    assert "refused: Cannot open the index" in opened.stdout and "another process has the index" in opened.stdout, opened
    assert "model loaded: False" in opened.stdout
    asked = run("ask", "What is the timeout?", "--index", str(settings.storage.index_dir))
    assert asked.returncode == 2 and asked.stderr.startswith("error: Cannot open the index") and "Traceback" not in asked.stderr
