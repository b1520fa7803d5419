"""The page started the way a Hugging Face Space starts it, and README's Space front matter checked against the repository.

A Streamlit Space runs ``streamlit run <app_file>`` from the repository root on port 7860, with ``SPACE_ID`` and
``SPACE_HOST`` set, the ``HF_TOKEN`` secret, and persistent storage (when bought) mounted at ``/data``
(hub-docs: spaces-overview, spaces-config-reference, spaces-storage). Here the storage is a temporary directory named
by ``DOCSRAG_SPACE_DATA_DIR`` and the router is the loopback fake. Streamlit runs the script only for a connected
session, so the test connects over the page's own WebSocket (``/_stcore/stream``) as a browser does and reads what the
page draws.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.chromium import free_port, wait_http
from tests.conftest import REPO
from tests.conftest_hf import FAKE_TOKEN

SPACE_PORT = 7860
STARTUP_TIMEOUT_S = 90
FIRST_START_TIMEOUT_S = 240  # Milvus Lite start-up and the bundled docs embedded through the fake router


def front_matter() -> dict:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
    assert match, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def test_readme_front_matter_names_what_the_repository_has() -> None:
    meta = front_matter()
    assert meta["sdk"] == "streamlit"
    assert (REPO / meta["app_file"]).is_file()
    # The Space installs requirements.txt over its own Streamlit: both must be the version the tests run.
    pinned = re.search(r"^streamlit==(\S+)$", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert meta["sdk_version"] == importlib.metadata.version("streamlit") == pinned.group(1)
    # A string: YAML would read 3.10 as the number 3.1.
    assert isinstance(meta["python_version"], str)
    assert meta["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}", "the Python the suite runs on"
    required = re.search(r'requires-python = ">=(\d+)\.(\d+)"', (REPO / "pyproject.toml").read_text())
    assert tuple(map(int, meta["python_version"].split("."))) >= (int(required.group(1)), int(required.group(2)))


def space_port() -> int:
    """7860 as on a Space, or a free port when something (another test run) already listens there."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", SPACE_PORT))
        except OSError:
            return free_port()
    return SPACE_PORT


def page_run(port: int, timeout: float) -> list[str]:
    """Connect as a browser does, and return the text of every element drawn until a script run ends without a rerun."""
    from google.protobuf.json_format import MessageToDict
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ClientState_pb2 import ClientState
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    texts: list[str] = []
    deadline = time.monotonic() + timeout
    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"], max_size=None) as ws:
        ws.send(BackMsg(rerun_script=ClientState()).SerializeToString())
        while time.monotonic() < deadline:
            message = ForwardMsg()
            message.ParseFromString(ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            kind = message.WhichOneof("type")
            if kind == "delta":
                element = MessageToDict(message.delta).get("newElement", {})
                texts += [str(v["body"]) for v in element.values() if isinstance(v, dict) and "body" in v]
                texts += [str(v["text"]) for v in element.values() if isinstance(v, dict) and "text" in v]
            elif kind == "script_finished" and message.script_finished == ForwardMsg.FINISHED_SUCCESSFULLY:
                return texts
    pytest.fail(f"the page did not finish a run within {timeout:g} s; it drew: {texts}")


@pytest.mark.slow
def test_the_page_started_as_a_space_chooses_hf_spaces_and_keeps_its_index_and_budget_in_persistent_storage(
    loopback, tmp_path: Path
) -> None:
    from integrations.usage_meter import UsageMeter
    from settings.model import BudgetSettings

    data = tmp_path / "data"
    data.mkdir()
    port = space_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DOCSRAG_")},
        "SPACE_ID": "someone/docsrag",
        "SPACE_HOST": "someone-docsrag.hf.space",
        "HF_TOKEN": FAKE_TOKEN,
        "HF_HOME": str(tmp_path / "hf_home"),
        "DOCSRAG_SPACE_DATA_DIR": str(data),
        "DOCSRAG_HF_BASE_URL": loopback.url,
    }
    meta = front_matter()
    command = [
        str(Path(sys.executable).parent / "streamlit"), "run", meta["app_file"], "--server.port", str(port),
        "--server.address", "127.0.0.1", "--server.headless", "true",
    ]  # fmt: skip
    with (tmp_path / "streamlit.log").open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://127.0.0.1:{port}/_stcore/health", STARTUP_TIMEOUT_S, process)
            texts = page_run(port, FIRST_START_TIMEOUT_S)
        finally:
            process.terminate()
            process.wait(timeout=30)
    page = re.sub(r"\\(.)", r"\1", "\n".join(texts))  # Markdown escapes off: the text as a visitor reads it
    index = data / "docsrag-index"
    assert "**Profile:** hf_spaces (running on a Hugging Face Space (SPACE_ID is set))" in page, page
    assert f"**Index:** Milvus Lite in {index}" in page
    assert "First start: indexing docs" in page  # ingestion.startup_folders of the profile
    bundled = sorted(p.name for p in (REPO / "docs").iterdir() if p.suffix == ".md")
    assert re.search(rf"{len(bundled)} files · \d+ chunks", page), page
    assert (index / "milvus.db").exists() and (index / "hf_embedding_cache.sqlite").is_file()
    # The budget: every embedding request of the first start metered in the index's usage file, shown on the page.
    requests = loopback.requests("embed")
    assert requests and all(r.headers["authorization"] == f"Bearer {FAKE_TOKEN}" for r in requests)
    meter = UsageMeter(index / "usage.sqlite", BudgetSettings())
    try:
        [(_, model, calls, *_)] = meter.by_day_and_model()
        assert model == "sentence-transformers/all-MiniLM-L6-v2" and calls == len(requests)
        assert meter.month_spend() > 0
    finally:
        meter.close()
    assert re.search(r"API usage this month: \$0\.\d+ of \$25\.00 \(ok\)", page), page
    assert not (tmp_path / "hf_home" / "token").exists()
