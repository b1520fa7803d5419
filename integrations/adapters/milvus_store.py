"""The store component: the one module that talks to Milvus (docs/architecture.md, The store); LlamaIndex and
pymilvus are imported where used, so the embedded index's server starts while the models load."""

from __future__ import annotations

import fcntl
import logging
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import IO, Any, NamedTuple

from app.manifest import check_index
from app.writer_lock import current_writer
from integrations.adapters.sqlite_file import CorruptFile, integrity_problem
from integrations.keyword_text import KEYWORD_FIELD
from integrations.node_ids import files_filter
from settings import Settings

logger = logging.getLogger(__name__)

DENSE_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
#: The columns a node is rebuilt from (LlamaIndex's serialised node, its type, and the text column).
NODE_FIELDS = ["_node_content", "_node_type", "text"]
#: Metadata key (a Milvus dynamic field, so no schema change) of chunks stored before their vector (pending_vectors).
PENDING_KEY = "vector_pending"
_PENDING = f"{PENDING_KEY} == true"
#: Rows with a meaning vector; Milvus also matches rows written before the key existed.
_HAS_VECTOR = f"{PENDING_KEY} != true"

#: Embedded index files this process opened -> its handle holding their lock (see hold_lite_lock).
_held: dict[Path, IO] = {}


def embedded_file(uri: str) -> Path | None:
    """The Milvus Lite file a store URI names, None for a server: the one place that tells the kinds of store apart."""
    match uri.partition(":")[0]:
        case "http" | "https" | "tcp":  # a Milvus server or cluster, Zilliz Cloud, or serve-store on loopback
            return None
        case "unix":  # the Milvus Lite server of an ingest that holds the embedded index (ingest_store)
            return None
        case _:  # an embedded Milvus Lite file, locked to this process
            return Path(uri)


def check_lite_format(db_file: Path) -> None:
    """Refuse an index written with Milvus Lite 3 (a directory where Milvus Lite 2.5 keeps one file), saying what to do."""
    if db_file.is_dir():
        raise RuntimeError(
            f"The index in {db_file.parent} was written by an older docsrag (Milvus Lite 3 keeps a directory at {db_file}); "
            f"this version keeps the index in one file. Delete {db_file.parent} and ingest the documents again."
        )


def lock_path(db_file: Path) -> Path:
    """The lock file milvus-lite's embedded mode takes beside the index file (``.<name>.lock``)."""
    return db_file.parent / f".{db_file.name}.lock"


def hold_lite_lock(db_file: Path) -> bool:
    """Check the embedded index's format and take its lock before milvus-lite tries (it deletes a lock it fails to
    take); False when another process holds it. The handle stays open: closing any handle drops this process's lock."""
    check_lite_format(db_file)
    db_file.parent.mkdir(parents=True, exist_ok=True)
    key = db_file.resolve()
    if key in _held:
        return True
    handle = open(lock_path(key), "a")  # noqa: SIM115 - held until release_lite_lock()
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return False
    _held[key] = handle
    return True


def held_elsewhere(db_file: Path) -> bool:
    """Whether another process holds the embedded index's lock; probed without keeping it or creating anything."""
    key = db_file.resolve()
    if key in _held or not lock_path(key).is_file():
        return False
    with open(lock_path(key), "a") as handle:  # closing it drops only this probe's lock: this process held none
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
    return False


def release_lite_lock(db_file: Path) -> None:
    handle = _held.pop(db_file.resolve(), None)
    if handle is not None:
        handle.close()


def claim_index(settings: Settings) -> None:
    """Check the index can be opened by this version and, when embedded, take its lock; a process that loads models
    calls it first, so a locked index is refused in a moment, not after the models load."""
    db_file = embedded_file(settings.storage.milvus_uri())
    if db_file is not None and db_file.resolve() in _held:
        return  # claimed already: open_runtime claims before the models load, MilvusStore when it opens
    check_index(settings.storage.index_dir)
    if db_file is None:
        return
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)  # milvus-lite 2.5 imports it
    if not hold_lite_lock(db_file):
        raise RuntimeError(
            f"Cannot open the index at {db_file}: another process has the index {db_file.resolve()} open (a docsrag page, "
            "`serve-store`, or an ingest that is still starting: questions get through once it has opened the index, so ask "
            "again in a few seconds). Milvus Lite allows one process per index: stop that process, or if `serve-store` serves "
            "this index, point this process at it with DOCSRAG_STORAGE__URI=http://127.0.0.1:<port> (the address serve-store printed)."
        )


def _lite_server(db_file: Path):
    """This process's Milvus Lite server for the file, if it runs."""
    from milvus_lite.server_manager import server_manager_instance

    return server_manager_instance._servers.get(str(db_file.resolve()))  # no public way to ask


def start_lite_server(settings: Settings) -> None:
    """Start an existing embedded index's Milvus Lite server in the background, overlapping the model load; MilvusStore
    connects to it (milvus-lite keeps one per file)."""
    uri = settings.storage.milvus_uri()
    if (db_file := embedded_file(uri)) is None or not db_file.is_file():
        return
    from milvus_lite.server_manager import server_manager_instance

    threading.Thread(target=server_manager_instance.start_and_get_uri, args=(uri,), name="docsrag-milvus-lite", daemon=True).start()


def release_lite_store(settings: Settings) -> None:
    """Stop this process's Milvus Lite server for an embedded index (if it runs), then drop the lock."""
    db_file = embedded_file(settings.storage.milvus_uri())
    if db_file is None:
        return
    if _lite_server(db_file) is not None:  # releasing a file it does not serve raises
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(str(db_file))
    release_lite_lock(db_file)


def ingest_store(settings: Settings) -> str | None:
    """The Unix socket of a running ingest's Milvus Lite server (recorded by app.writer_lock), through which a reader
    uses the embedded index that ingest holds; None when no live ingest holds it or the store is a server."""
    db_file = embedded_file(settings.storage.milvus_uri())
    if db_file is None:
        return None
    writer = current_writer(settings.storage.index_dir)
    if writer is None or not writer.store or not Path(writer.store.removeprefix("unix:")).exists():
        return None
    return writer.store if held_elsewhere(db_file) else None


def lite_damage(db_file: Path) -> str | None:
    """What is wrong with an embedded index file that Milvus Lite (which keeps it in SQLite) could not open, if damaged."""
    import sqlite3

    if not db_file.is_file():
        return None
    try:
        with closing(sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            return integrity_problem(conn)
    except sqlite3.Error:
        return None


class Hit(NamedTuple):
    """One search result: chunk id, score as Milvus reports it, and the row's node columns."""

    id: str
    score: float
    entity: dict[str, Any]


def hit_node(entity: dict[str, Any]):
    """The node a row holds, as the vector store itself rebuilds it (the text column wins over the serialised text)."""
    from llama_index.core.vector_stores.utils import metadata_dict_to_node

    return metadata_dict_to_node(entity, text=entity.get("text"))


class MilvusStore:
    """The chunk collection of an index. ``vector_store`` is LlamaIndex's ``MilvusVectorStore`` (the ingestion pipeline
    writes through it); everything else goes through the methods here."""

    def __init__(self, settings: Settings, dim: int) -> None:
        """Open (or create) the collection with a ``dim``-long dense vector and BM25 (claims an embedded index first)."""
        from llama_index.vector_stores.milvus import MilvusVectorStore
        from llama_index.vector_stores.milvus.utils import BM25BuiltInFunction
        from pymilvus import DataType

        from app.composition import quiet_noisy_loggers

        quiet_noisy_loggers()
        claim_index(settings)
        self.settings, self.dim = settings, dim
        uri, self.db_file = settings.storage.milvus_uri(), embedded_file(settings.storage.milvus_uri())
        started = time.perf_counter()
        try:
            self.vector_store = MilvusVectorStore(
                uri=uri,
                token=settings.storage.token.get_secret_value() if settings.storage.token else "",
                collection_name=settings.storage.collection,
                dim=dim,
                similarity_metric="IP",  # vectors are L2-normalised: inner product == cosine
                enable_sparse=True,
                # BM25 runs on our normalised terms (integrations.keyword_text), identical on Lite and servers.
                scalar_field_names=[KEYWORD_FIELD],
                scalar_field_types=[DataType.VARCHAR],
                sparse_embedding_function=BM25BuiltInFunction(input_field_names=KEYWORD_FIELD, analyzer_params={"tokenizer": "standard"}),
                upsert_mode=True,  # deterministic node ids make a resumed run idempotent
                use_async_client=False,
                consistency_level="Session",
            )
        except Exception as exc:  # pymilvus raises many types (MilvusException, grpc errors, OSError on a locked dir)
            if self.db_file is not None:
                release_lite_store(settings)
                damage = lite_damage(self.db_file)
                if damage:
                    raise CorruptFile(
                        f"The index file {uri} is damaged ({damage}): move it aside (mv {uri} {uri}.damaged), then ingest each "
                        "folder again: the files whose chunks are missing are ingested again and listed as 'restored:'"
                    ) from None
                # This process holds the index's lock, so no other docsrag process has it open.
                hint = f"Milvus Lite's own output above says why; check free disk space and that {self.db_file.parent} is writable."
            else:
                hint = "Check storage.uri and storage.token and that the server is reachable."
            raise RuntimeError(f"Cannot open the Milvus store at {uri}: {exc}. {hint}") from exc
        self.client, self.collection_name = self.vector_store.client, self.vector_store.collection_name
        # The integration leaves an existing collection released; searches would fail.
        self.client.load_collection(self.collection_name)
        logger.debug("opened %s in %.2fs", uri, time.perf_counter() - started)
        limit = settings.storage.lite_max_chunks
        if self.db_file is not None and limit and (chunks := self.count()) > limit:
            logger.warning(
                "the embedded index at %s holds %d chunks, over the %d that Milvus Lite serves within the latency and start-up "
                "targets (storage.lite_max_chunks); queries and opening get slower as it grows. Move it to a Milvus server: "
                "`python -m app serve-store` on this machine, or Milvus Standalone/Distributed or Zilliz Cloud with "
                "storage.uri/storage.token (docs/scaling.md).",
                uri,
                chunks,
                limit,
            )

    def close(self) -> None:
        """Close the client; for an embedded index also stop its Milvus Lite server (a child process) and unlock it."""
        self.client.close()
        release_lite_store(self.settings)

    def lite_socket(self) -> str | None:
        """The Unix socket of this process's Milvus Lite server for its embedded index (None for a server)."""
        server = _lite_server(self.db_file) if self.db_file is not None else None
        return server.uds_path if server is not None else None

    def add(self, nodes: list) -> None:
        self.vector_store.add(nodes)

    def delete_pieces(self, piece_ids: list[str]) -> None:
        """Delete the chunks of these pieces (LlamaIndex's ref doc ids)."""
        self.vector_store.delete(piece_ids)

    def delete_files(self, file_ids: list[str]) -> None:
        """Delete every chunk of these files (vectors and BM25 terms live in the same rows)."""
        for start in range(0, len(file_ids), 200):
            self.client.delete(self.collection_name, filter=files_filter(file_ids[start : start + 200]))

    def count(self, filter: str = "") -> int:
        rows = self.client.query(self.collection_name, filter=filter, output_fields=["count(*)"])
        return int(rows[0]["count(*)"]) if rows else 0

    def chunk_counts(self, file_ids: list[str]) -> dict[str, int]:
        """Chunks the store holds for each of these files."""
        return {file: self.count(files_filter([file])) for file in file_ids}

    def pending_count(self) -> int:
        """Chunks stored before their meaning vector (integrations.pending_vectors)."""
        return self.count(_PENDING)

    def pending_rows(self, limit: int) -> list[dict]:
        """Up to ``limit`` rows still waiting for their vector, every column."""
        return self.client.query(self.collection_name, filter=_PENDING, output_fields=["*"], limit=limit)

    def rows(self, fields: list[str], limit: int) -> list[dict]:
        """The first ``limit`` rows with these columns."""
        return self.client.query(self.collection_name, filter="", output_fields=fields, limit=limit)

    def all_rows(self, fields: list[str], batch: int = 2000) -> Iterator[list[dict]]:
        """Every row with these columns, ``batch`` rows at a time."""
        iterator = self.client.query_iterator(self.collection_name, filter="", output_fields=fields, batch_size=batch)
        try:
            while rows := iterator.next():
                yield rows
        finally:
            iterator.close()

    def by_id(self, ids: list[str], fields: list[str]) -> list[dict]:
        """These chunks' rows by primary key (absent ids are chunks that do not exist)."""
        return self.client.get(collection_name=self.collection_name, ids=ids, output_fields=fields) if ids else []

    def chunks(self, ids: list[str]) -> dict[str, tuple[str, str]]:
        """Text and section path of these chunks by primary key."""
        return {row["id"]: (str(row.get("text") or ""), str(row.get("section") or "")) for row in self.by_id(ids, ["text", "section"])}

    def vectors(self, ids: list[str]) -> dict[str, list[float]]:
        """The stored dense vectors of these chunks (zero vectors for chunks still pending)."""
        return {row["id"]: row[DENSE_FIELD] for row in self.by_id(ids, [DENSE_FIELD])}

    def search(self, queries: list[Any], field: str, metric: str, limit: int, file_ids: list[str] | None = None) -> list[list[Hit]]:
        """One request for all queries: per query, its hits best first, within ``file_ids`` when given; a dense search
        skips chunks still waiting for their vector."""
        if limit <= 0 or not queries:
            return [[] for _ in queries]
        parts = [files_filter(file_ids)] if file_ids is not None else []
        if field == DENSE_FIELD:
            parts.append(_HAS_VECTOR)
        result = self.client.search(
            collection_name=self.collection_name,
            data=queries,
            anns_field=field,
            limit=limit,
            filter=" and ".join(f"({part})" for part in parts),
            output_fields=NODE_FIELDS,
            search_params={"metric_type": metric},
        )
        return [[Hit(hit["id"], float(hit["distance"]), hit["entity"]) for hit in hits] for hits in result]


# serve-store (docs/scaling.md): milvus-lite's own server on loopback TCP, holding and watching the embedded mode's lock.
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


class StoreServer:
    """The Milvus Lite binary serving one index file on ``host:port``, as a managed child process (a context manager)."""

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
        self._server = None

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> StoreServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        from milvus_lite.server import Server

        class TcpServer(Server):
            """milvus-lite's server on a TCP address, given the lock file to watch as in its embedded mode (it only
            passes it for a socket)."""

            @property
            def args(self) -> list:
                return [*super().args, str(lock_path(self._db_file))]

        if self._server is not None:
            raise StoreServerError("the store server is already started")
        if _port_in_use(self.host, self.port):
            raise StoreServerError(
                f"{self.host}:{self.port} is already in use (another store server?): "
                f"stop that process, use it (DOCSRAG_STORAGE__URI={self.uri}), or pass another --port"
            )
        if not hold_lite_lock(self.db_file):  # before milvus-lite, which deletes a lock it fails to take
            raise StoreServerError(
                f"cannot serve {self.db_file}: another process has this index open (a docsrag page or ingest in embedded mode, "
                "or another store server). Stop it, then start the server; afterwards point every process at the server "
                f"with DOCSRAG_STORAGE__URI={self.uri}"
            )
        self._server = TcpServer(str(self.db_file), address=f"{self.host}:{self.port}")
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
