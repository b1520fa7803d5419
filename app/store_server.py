"""A local Milvus server over an index file, so several processes can share one index.

An embedded (Milvus Lite) index file is locked by the one process that opens
it. The ``milvus`` binary shipped in the milvus-lite wheel (the embedded mode
runs the same binary on a Unix socket) serves the same file over TCP on
loopback; every docsrag process then uses ``storage.uri=http://127.0.0.1:<port>``
instead of opening the file itself. The data format is the same, so an
existing embedded index is served as it is, and stopping the server leaves a
file the embedded mode opens again. The server holds the embedded mode's lock
on the file while it runs, so the two never open it at once.

The server runs as a child process in its own session (a Ctrl-C in the
terminal reaches only the parent, which then stops the child). Every write is
committed to the file (SQLite) before it is acknowledged, so stopping loses
nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
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

from app.store import check_lite_format

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19530


class StoreServerError(RuntimeError):
    """The store server could not be started (the message names the cause and the fix)."""


def lock_path(db_file: Path) -> Path:
    """The lock file milvus-lite's embedded mode takes beside the index file (``.<name>.lock``)."""
    return db_file.parent / f".{db_file.name}.lock"


def milvus_binary() -> Path:
    """The Milvus Lite server binary inside the milvus-lite wheel (its shared libraries are beside it)."""
    import importlib.util

    spec = importlib.util.find_spec("milvus_lite")
    if spec is None or not spec.origin:
        raise StoreServerError("the package milvus-lite is not installed: run `make install`")
    return Path(spec.origin).parent / "lib" / "milvus"


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
    """SIGTERM must stop the server even when we were started with it ignored (a background job, nohup).
    On Linux the server also gets SIGTERM if its parent dies."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class StoreServer:
    """The Milvus Lite binary serving one index file on ``host:port``, as a managed child process.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, db_file: Path, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, start_timeout_s: float = 60.0) -> None:
        if host not in {"127.0.0.1", "localhost", "::1"}:
            # The server has no authentication: keep it on loopback; use a real Milvus deployment for a network.
            raise StoreServerError(
                f"the store server binds only to loopback, not {host!r}: use 127.0.0.1, "
                "or deploy Milvus Standalone/Distributed for access from other machines (docs/scaling.md)"
            )
        self.db_file = Path(db_file).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.start_timeout_s = start_timeout_s
        self.process: subprocess.Popen | None = None
        self._lock = None
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
        check_lite_format(self.db_file)
        binary = milvus_binary()
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        command = [str(binary), str(self.db_file), f"{self.host}:{self.port}", "ERROR"]
        logger.info("starting %s", " ".join(command))
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=str(self.db_file.parent),
            start_new_session=True,  # a terminal Ctrl-C reaches only us; we stop the server once
            preexec_fn=_prepare_child if os.name == "posix" else None,
            env={**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(binary.parent), os.environ.get("LD_LIBRARY_PATH")]))},
        )
        self._reader = Thread(target=self._drain, name="store-server-output", daemon=True)
        self._reader.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("store server ready at %s serving %s", self.uri, self.db_file)

    def _take_lock(self) -> None:
        """The embedded mode's lock on the index file: held while the server runs, so no process opens the file directly."""
        handle = open(lock_path(self.db_file), "a")  # noqa: SIM115 - held until stop()
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StoreServerError(
                f"cannot serve {self.db_file}: another process has this index open (a docsrag page or ingest in embedded mode, "
                "or another store server). Stop it, then start the server; afterwards point every process at the server "
                f"with DOCSRAG_STORAGE__URI={self.uri}"
            ) from None
        self._lock = handle

    def _release_lock(self) -> None:
        handle, self._lock = self._lock, None
        if handle is not None:
            fcntl.lockf(handle, fcntl.LOCK_UN)
            handle.close()

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
        if "bind" in text.lower() or "address already in use" in text.lower():
            return f"cannot bind {self.host}:{self.port}: the port is in use; pass another --port"
        return f"the Milvus Lite server exited with code {code} before it was ready; its output:\n{text}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Stop (SIGTERM, then SIGKILL) and release the index file. Returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            self._release_lock()
            return None
        if process.poll() is None:
            for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
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
        self._release_lock()
        logger.info("store server stopped (exit code %s)", process.returncode)
        return process.returncode

    def wait(self) -> int:
        """Block until the server exits by itself (used by ``serve-store``)."""
        assert self.process is not None
        return self.process.wait()
