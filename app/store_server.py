"""A local Milvus server over an index directory, so several processes can share one index.

An embedded (Milvus Lite) index directory is locked by the one process that
opens it. ``milvus-lite server`` (shipped in the milvus-lite wheel) serves the
same directory over gRPC; every docsrag process then uses
``storage.uri=http://127.0.0.1:<port>`` instead of opening the directory
itself. The data format is the same, so an existing embedded index is served
as it is, and stopping the server leaves a directory the embedded mode opens
again.

The server runs as a child process in its own session (a Ctrl-C in the
terminal reaches only the parent, which then stops the child once, gracefully:
SIGINT makes milvus-lite finish in-flight requests and close the database,
which writes its index files).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from threading import Thread

from settings import Settings

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19530


class StoreServerError(RuntimeError):
    """The store server could not be started (the message names the cause and the fix)."""


def data_dir_for(settings: Settings) -> Path:
    """The directory an embedded index keeps its Milvus data in (``<index_dir>/milvus.db``)."""
    return Path(str(settings.storage.index_dir / "milvus.db")).resolve()


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on right now (for tests and ``--port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _prepare_child() -> None:  # pragma: no cover - runs in the child before exec
    """SIGINT must stop the server gracefully even when we were started with it ignored (a background job, nohup):
    reset it so Python turns it into KeyboardInterrupt. On Linux the server also gets SIGINT if its parent dies."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGINT))  # PR_SET_PDEATHSIG


class StoreServer:
    """``milvus-lite server --data-dir D --host 127.0.0.1 --port P`` as a managed child process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self, data_dir: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, start_timeout_s: float = 60.0, max_workers: int = 10
    ) -> None:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            # The server has no authentication: keep it on loopback; use a real Milvus deployment for a network.
            raise StoreServerError(
                f"the store server binds only to loopback, not {host!r}: use 127.0.0.1, "
                "or deploy Milvus Standalone/Distributed for access from other machines (docs/scaling.md)"
            )
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout_s = start_timeout_s
        self.max_workers = max_workers
        self.process: subprocess.Popen | None = None
        self._output: deque[str] = deque(maxlen=40)
        self._reader: Thread | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> StoreServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self.process is not None:
            raise StoreServerError("the store server is already started")
        if _port_in_use(self.host, self.port):
            raise StoreServerError(
                f"{self.host}:{self.port} is already in use (another store server?): "
                f"stop that process, use it (DOCSRAG_STORAGE__URI={self.uri}), or pass another --port"
            )
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "milvus_lite", "server",
            "--data-dir", str(self.data_dir), "--host", self.host, "--port", str(self.port), "--max-workers", str(self.max_workers),
        ]  # fmt: skip
        logger.info("starting %s", " ".join(command))
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a terminal Ctrl-C reaches only us; we stop the server once, gracefully
            preexec_fn=_prepare_child if os.name == "posix" else None,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self._reader = Thread(target=self._drain, name="store-server-output", daemon=True)
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("store server ready at %s serving %s", self.uri, self.data_dir)

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip()
            self._output.append(line)
            logger.debug("milvus-lite: %s", line)

    def output(self) -> str:
        """The server's last lines of output (for error messages)."""
        return "\n".join(self._output)

    def _wait_ready(self) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if self._reader:
                    self._reader.join(timeout=2)
                raise StoreServerError(self._explain_exit(self.process.returncode))
            if _port_in_use(self.host, self.port):
                try:
                    client = MilvusClient(uri=self.uri, timeout=5)
                    try:
                        client.list_collections()
                    finally:
                        client.close()
                    return
                except Exception as exc:  # noqa: BLE001 - pymilvus raises several types while the server comes up
                    last_error = exc
            time.sleep(0.2)
        raise StoreServerError(
            f"the store server on {self.uri} did not answer within {self.start_timeout_s:.0f}s "
            f"(last error: {last_error}); its output:\n{self.output()}"
        )

    def _explain_exit(self, code: int) -> str:
        text = self.output()
        if "DataDirLockedError" in text or "holds the lock" in text:
            return (
                f"cannot serve {self.data_dir}: another process has this index open (a docsrag page or ingest in embedded mode, "
                "or another store server). Stop it, then start the server; afterwards point every process at the server "
                f"with DOCSRAG_STORAGE__URI={self.uri}"
            )
        if "Failed to bind" in text or "address already in use" in text.lower():
            return f"cannot bind {self.host}:{self.port}: the port is in use; pass another --port"
        return f"milvus-lite server exited with code {code} before it was ready; its output:\n{text}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int | None:
        """Stop gracefully (SIGINT: drain requests, close the database), then SIGTERM, then SIGKILL. Returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(sig)
                try:
                    process.wait(timeout=wait_s)
                    break
                except subprocess.TimeoutExpired:
                    logger.warning("store server (pid %d) did not stop after %s within %.0fs", process.pid, sig.name, wait_s)
        if self._reader:
            self._reader.join(timeout=5)
        if process.stdout:
            process.stdout.close()
        logger.info("store server stopped (exit code %s)", process.returncode)
        return process.returncode

    def wait(self) -> int:
        """Block until the server exits by itself (used by ``serve-store``)."""
        assert self.process is not None
        return self.process.wait()
