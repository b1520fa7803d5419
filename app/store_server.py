"""A local Milvus server over an index file, so several processes can share one index.

An embedded (Milvus Lite) index file is locked by the one process that opens
it. milvus-lite's own ``Server`` (the embedded mode runs the same binary on a
Unix socket) serves the same file over TCP on loopback; every docsrag process
then uses ``storage.uri=http://127.0.0.1:<port>`` instead of opening the file
itself. The data format is the same, so an existing embedded index is served as
it is, and stopping the server leaves a file the embedded mode opens again. The
server holds the embedded mode's lock on the file while it runs, so the two
never open it at once, and the binary watches that lock: it stops when the lock
is released, also when this process dies.
"""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

from milvus_lite.server import Server

from app.store import IndexLocked, check_lite_format, hold_lite_lock, lock_path, release_lite_lock

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 19530


class StoreServerError(RuntimeError):
    """The store server could not be started (the message names the cause and the fix)."""


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on right now (for tests and ``--port 0``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class _TcpServer(Server):
    """milvus-lite's server on a TCP address, given the lock file to watch as in its embedded mode (it only passes it for a socket)."""

    @property
    def args(self) -> list:
        return [*super().args, str(lock_path(self._db_file))]


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
        self._server: Server | None = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> StoreServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._server is not None:
            raise StoreServerError("the store server is already started")
        if _port_in_use(self.host, self.port):
            raise StoreServerError(
                f"{self.host}:{self.port} is already in use (another store server?): "
                f"stop that process, use it (DOCSRAG_STORAGE__URI={self.uri}), or pass another --port"
            )
        check_lite_format(self.db_file)
        self.db_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            hold_lite_lock(self.db_file)  # before milvus-lite, which deletes a lock it fails to take
        except IndexLocked:
            raise StoreServerError(
                f"cannot serve {self.db_file}: another process has this index open (a docsrag page or ingest in embedded mode, "
                "or another store server). Stop it, then start the server; afterwards point every process at the server "
                f"with DOCSRAG_STORAGE__URI={self.uri}"
            ) from None
        self._server = _TcpServer(str(self.db_file), address=f"{self.host}:{self.port}")
        logger.info("starting %s", " ".join(map(str, self._server.args)))
        try:
            if not self._server.start():
                raise StoreServerError(f"the Milvus Lite server for {self.db_file} exited as it started; its output is above")
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("store server ready at %s serving %s", self.uri, self.db_file)

    def _wait_ready(self) -> None:
        from pymilvus import MilvusClient

        deadline = time.monotonic() + self.start_timeout_s
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            code = self.exit_code()
            if code is not None:
                raise StoreServerError(f"the Milvus Lite server exited with code {code} before it was ready; its output is above")
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
        raise StoreServerError(f"the store server on {self.uri} did not answer within {self.start_timeout_s:.0f}s: {last_error}")

    def exit_code(self) -> int | None:
        """The server process's exit code, None while it runs."""
        process = self._server._p if self._server is not None else None  # milvus-lite keeps its process private
        return process.poll() if process is not None else None

    def running(self) -> bool:
        return self._server is not None and self._server._p is not None and self.exit_code() is None

    def stop(self) -> int | None:
        """Release the index file's lock (the server then stops by itself) and wait for it. Returns the exit code."""
        server, self._server = self._server, None
        if server is None:
            release_lite_lock(self.db_file)
            return None
        process = server._p
        server.stop()
        release_lite_lock(self.db_file)
        code = process.returncode if process is not None else None
        logger.info("store server stopped (exit code %s)", code)
        return code

    def wait(self) -> int:
        """Block until the server exits by itself (used by ``serve-store``)."""
        assert self._server is not None and self._server._p is not None
        return self._server._p.wait()
