"""Every broken or busy file the index owns gets one clear line naming it and the fix, never a traceback."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, serve_store

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


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    """A docs folder and an index of it, built once; tests work on copies of the index."""
    base = tmp_path_factory.mktemp("built")
    docs = base / "docs"
    docs.mkdir()
    for n in range(3):
        (docs / f"guide{n}.md").write_text(f"# Guide {n}\n\n## Timeout\n\nThe timeout of service {n} is {30 + n} seconds.\n")
    done = run("ingest", str(docs), "--index", str(base / "index"), "-q")
    assert done.returncode == 0, done.stderr
    return docs, base / "index"


@pytest.fixture
def index(built, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built[1], copy)
    return copy


def garble(path: Path, offset: int, size: int = 4096) -> None:
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(random.Random(7).randbytes(size))


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    return line


def test_a_damaged_milvus_db_is_called_damaged_and_the_fix_it_names_works(built, index: Path) -> None:
    garble(index / "milvus.db", 0)
    line = one_line_error(run("ask", "What is the timeout?", "--index", str(index)))
    assert "milvus.db is damaged" in line and "another docsrag process" not in line and "ingest each folder again" in line

    (index / "milvus.db").rename(index / "milvus.db.damaged")  # the fix it names
    again = run("ingest", str(built[0]), "--index", str(index), "-q")
    assert again.returncode == 0 and again.stdout.count("restored: ") == 3, again.stdout
    assert "31 seconds" in run("ask", "What is the timeout of service 1?", "--index", str(index)).stdout


@pytest.mark.parametrize("offset", [0, 8192], ids=["header", "mid-file"])
def test_a_damaged_state_file_is_named_with_its_fix_and_never_read_as_unchanged(built, index: Path, offset: int) -> None:
    garble(index / "state.sqlite", offset)
    line = one_line_error(run("ingest", str(built[0]), "--index", str(index), "-q"))
    assert "state.sqlite is damaged" in line and "Move it aside" in line
    if offset == 0:  # unreadable: every command says so; a damaged page deeper in only an ingest (which checks every page) sees
        assert "state.sqlite is damaged" in one_line_error(run("ask", "What is the timeout?", "--index", str(index)))

    (index / "state.sqlite").rename(index / "state.sqlite.damaged")  # the fix it names
    again = run("ingest", str(built[0]), "--index", str(index), "-q")
    assert again.returncode == 0 and "3 ingested" in again.stdout, again.stdout


def test_a_damaged_embedding_cache_is_rebuilt_with_a_notice_and_a_damaged_usage_ledger_is_named(hf_env, tmp_path: Path) -> None:
    from tests.test_profiles import QUESTION, docs

    folder, index = docs(tmp_path), tmp_path / "index"  # hf_env points storage.index_dir there
    assert run("--profile", "hf_api", "ingest", str(folder), "-q").returncode == 0
    garble(index / "hf_embedding_cache.sqlite", 0)
    asked = run("--profile", "hf_api", "ask", QUESTION)
    assert asked.returncode == 0 and "Sources:" in asked.stdout, asked.stderr
    [notice] = [line for line in asked.stderr.splitlines() if "hf_embedding_cache.sqlite" in line]
    assert notice.startswith("WARNING") and "is damaged" in notice and "fills again" in notice
    again = run("--profile", "hf_api", "ask", QUESTION)  # the rebuilt cache serves the next process
    assert again.returncode == 0 and "hf_embedding_cache" not in again.stderr

    garble(index / "usage.sqlite", 0)
    for command in (["ask", QUESTION], ["ingest", str(folder), "-q"], ["usage"]):
        line = one_line_error(run("--profile", "hf_api", *command))
        assert "usage.sqlite is damaged" in line and "monthly_cap_usd" in line, line


def test_an_index_flag_naming_a_file_is_one_line(built) -> None:
    line = one_line_error(run("ask", "What is the timeout?", "--index", str(built[0] / "guide0.md")))
    assert "is a file: give the folder" in line


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 16 MB tmpfs of its own (needs mount rights: root in a container), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    try:
        with (disk / "filler").open("wb") as handle:
            while True:
                handle.write(b"\0" * 4096)
                handle.flush()
    except OSError:
        pass


@pytest.mark.slow
def test_a_full_or_read_only_disk_is_one_line_and_loses_nothing(built, small_disk: Path, tmp_path: Path) -> None:
    docs, index = tmp_path / "docs", small_disk / "index"
    shutil.copytree(built[0], docs)
    assert run("ingest", str(docs), "--index", str(index), "-q").returncode == 0
    for n in range(3):
        (docs / f"guide{n}.md").write_text(f"# Guide {n}\n\n## Timeout\n\nThe timeout of service {n} is now {60 + n} seconds.\n" * 40)
    fill(small_disk)
    line = one_line_error(run("ingest", str(docs), "--index", str(index), "-q"))
    assert "is full" in line and "nothing indexed before is lost" in line
    asked = run("ask", "What is the timeout of service 2?", "--index", str(index))  # a full disk still answers
    assert asked.returncode == 0 and "seconds" in asked.stdout, asked.stderr

    (small_disk / "filler").unlink()
    resumed = run("ingest", str(docs), "--index", str(index), "-q")
    assert resumed.returncode == 0, resumed.stderr
    fresh = run("ingest", str(docs), "--index", str(tmp_path / "fresh"), "-q")
    assert fresh.returncode == 0 and chunk_ids(index) == chunk_ids(tmp_path / "fresh")

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    (docs / "guide0.md").write_text("# Guide 0\n\nChanged again.\n")
    for command in (["ingest", str(docs), "-q"], ["ask", "What is the timeout?"]):
        line = one_line_error(run(*command, "--index", str(index)))
        assert "cannot be written" in line and "--index COPY" in line


def chunk_ids(index: Path) -> list[str]:
    from integrations.adapters.milvus_store import MilvusStore
    from settings import load_settings

    settings = load_settings("local", storage={"index_dir": str(index)})
    store = MilvusStore(settings, 384)
    try:
        return sorted(row["id"] for row in store.client.query(store.collection_name, filter="", output_fields=["id"], limit=16000))
    finally:
        store.close()


KILL_SERVER_AT_PENDING = """
import os, signal, sys
from app.manifest import Manifest
original = Manifest.mark_pending
def mark_then_kill(self, records, *args, **kwargs):
    original(self, records, *args, **kwargs)
    if pid := int(os.environ.pop("SERVER_PID", "0")):
        os.kill(pid, signal.SIGKILL)
Manifest.mark_pending = mark_then_kill
from app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_store_server_killed_mid_ingest_is_one_line(built, tmp_path: Path) -> None:
    server, uri = serve_store(tmp_path / "served")
    try:
        env = {"DOCSRAG_STORAGE__URI": uri, "SERVER_PID": str(server.pid)}
        line = one_line_error(
            run("ingest", str(built[0]), "--index", str(tmp_path / "served"), "-q", script=KILL_SERVER_AT_PENDING, env=env)
        )
        assert "lost the connection to the Milvus store" in line and "serve-store" in line
    finally:
        server.kill()
        server.wait()
