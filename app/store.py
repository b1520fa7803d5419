"""The Milvus collection behind an index: Milvus Lite by default, a server or cluster by URI."""

from __future__ import annotations

import fcntl
import logging
import threading
import time
import warnings
from pathlib import Path
from typing import IO

from app.manifest import check_index
from app.writer_lock import current_writer
from integrations.adapters.sqlite_file import CorruptFile, integrity_problem
from integrations.keyword_text import KEYWORD_FIELD
from integrations.node_ids import files_filter
from settings import Settings

logger = logging.getLogger(__name__)

#: Embedded index files this process opened -> its handle holding their lock (see hold_lite_lock).
_held: dict[Path, IO] = {}


class IndexLocked(RuntimeError):
    """Another process has the embedded index open."""


def is_lite_uri(uri: str) -> bool:
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


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


def hold_lite_lock(db_file: Path) -> None:
    """Take the embedded index's lock for this process before milvus-lite tries, or raise IndexLocked.

    When milvus-lite fails to take the lock itself, it deletes the lock file that
    the other process holds, and the next process then opens the index beside it.
    Checking first keeps milvus-lite away from a held lock. The handle stays open
    until release_lite_lock: closing any handle on the file drops this process's lock.
    """
    key = db_file.resolve()
    if key in _held:
        return
    handle = open(lock_path(key), "a")  # noqa: SIM115 - held until release_lite_lock()
    try:
        fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise IndexLocked(f"another process has the index {key} open") from None
    _held[key] = handle


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
    check_index(settings.storage.index_dir)
    uri = settings.storage.milvus_uri()
    if not is_lite_uri(uri):
        return
    check_lite_format(Path(uri))
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)  # milvus-lite 2.5 imports it
    try:
        hold_lite_lock(Path(uri))
    except IndexLocked as exc:
        raise RuntimeError(
            f"Cannot open the index at {uri}: {exc} (a docsrag page, `serve-store`, or an ingest that is still starting: "
            "questions get through once it has opened the index, so ask again in a few seconds). Milvus Lite allows one "
            "process per index: stop that process, or if `serve-store` serves this index, point this process at it with "
            "DOCSRAG_STORAGE__URI=http://127.0.0.1:<port> (the address serve-store printed)."
        ) from None


def start_lite_server(settings: Settings) -> None:
    """Start an existing embedded index's Milvus Lite server (a child process) in the background.

    Its start-up then overlaps the imports and the model load of this process instead of following them;
    :func:`open_vector_store` connects to the same server (milvus-lite keeps one per index file). Called after
    :func:`claim_index`, which checked the index and took its lock; an index that does not exist yet or a server URI
    is left to :func:`open_vector_store`.
    """
    uri = settings.storage.milvus_uri()
    if not is_lite_uri(uri) or not Path(uri).is_file():
        return
    from milvus_lite.server_manager import server_manager_instance

    threading.Thread(target=server_manager_instance.start_and_get_uri, args=(uri,), name="docsrag-milvus-lite", daemon=True).start()


def lite_socket(settings: Settings) -> str | None:
    """The Unix socket of the Milvus Lite server this process runs for its embedded index (None for a server URI or
    before the store is open); other processes may connect to it (:func:`ingest_store`)."""
    uri = settings.storage.milvus_uri()
    if not is_lite_uri(uri):
        return None
    from milvus_lite.server_manager import server_manager_instance

    server = server_manager_instance._servers.get(str(Path(uri).resolve()))  # no public way to ask
    return server.uds_path if server is not None else None


def ingest_store(settings: Settings) -> str | None:
    """The socket through which a process that only reads may use an embedded index that a running ingest has open.

    Milvus Lite lets one process open the file; the ingest's own Milvus Lite server (a child process holding that
    lock) answers on a Unix socket, which app.writer_lock records beside the manifest. None when no live ingest holds
    the index (then it is opened as usual) or the store is a server, which every process opens anyway.
    """
    uri = settings.storage.milvus_uri()
    if not is_lite_uri(uri):
        return None
    writer = current_writer(settings.storage.index_dir)
    if writer is None or not writer.store or not Path(writer.store.removeprefix("unix:")).exists():
        return None
    return writer.store if held_elsewhere(Path(uri)) else None


def reading_through(settings: Settings, socket: str) -> Settings:
    """The settings of a process reading an embedded index through a running ingest's socket."""
    return settings.model_copy(update={"storage": settings.storage.model_copy(update={"uri": socket})})


def open_vector_store(settings: Settings, dim: int):
    """Open (or create) the chunk collection with a dense vector and Milvus' built-in BM25."""
    from llama_index.vector_stores.milvus import MilvusVectorStore
    from llama_index.vector_stores.milvus.utils import BM25BuiltInFunction
    from pymilvus import DataType

    # pymilvus sets up its own console handler when imported (after the CLI or page set its level) and logs every failed
    # call with a traceback; the failure reaches the user as one line of ours. Its logs stay for -v.
    logging.getLogger("pymilvus").setLevel(logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.CRITICAL)
    claim_index(settings)
    uri = settings.storage.milvus_uri()
    token = settings.storage.token.get_secret_value() if settings.storage.token else ""
    started = time.perf_counter()
    try:
        store = MilvusVectorStore(
            uri=uri,
            token=token,
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
        if is_lite_uri(uri):
            release_lite_store(uri)
            damage = lite_damage(Path(uri))
            if damage:
                raise CorruptFile(
                    f"The index file {uri} is damaged ({damage}): move it aside (mv {uri} {uri}.damaged), then ingest each "
                    "folder again: the files whose chunks are missing are ingested again and listed as 'restored:'"
                ) from None
            # This process holds the index's lock, so no other docsrag process has it open.
            hint = f"Milvus Lite's own output above says why; check free disk space and that {Path(uri).parent} is writable."
        else:
            hint = "Check storage.uri and storage.token and that the server is reachable."
        raise RuntimeError(f"Cannot open the Milvus store at {uri}: {exc}. {hint}") from exc
    # The integration leaves an existing collection released; searches would fail.
    store.client.load_collection(settings.storage.collection)
    logger.debug("opened %s in %.2fs", uri, time.perf_counter() - started)
    if is_lite_uri(uri):
        warn_if_lite_too_large(store, settings)
    return store


def lite_damage(db_file: Path) -> str | None:
    """What is wrong with an embedded index file that Milvus Lite (which keeps it in SQLite) could not open, if damaged."""
    import sqlite3

    if not db_file.is_file():
        return None
    try:
        conn = sqlite3.connect(f"{db_file.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        return integrity_problem(conn)
    except sqlite3.Error:
        return None
    finally:
        conn.close()


def close_vector_store(store, settings: Settings) -> None:
    """Close the store's client; for an embedded index also stop its Milvus Lite server (a child process) and unlock it."""
    store.client.close()
    uri = settings.storage.milvus_uri()
    if is_lite_uri(uri):
        release_lite_store(uri)


def release_lite_store(uri: str) -> None:
    """Stop this process's Milvus Lite server for the index file (if it runs), then drop the lock."""
    from milvus_lite.server_manager import server_manager_instance

    if Path(uri).resolve() in {Path(path) for path in server_manager_instance._servers}:  # no public way to ask
        server_manager_instance.release_server(uri)
    release_lite_lock(Path(uri))


def warn_if_lite_too_large(store, settings: Settings) -> int:
    """Warn when an embedded index holds more chunks than Milvus Lite serves within the targets; returns the count."""
    limit = settings.storage.lite_max_chunks
    if not limit:
        return 0
    chunks = count_chunks(store)
    if chunks > limit:
        logger.warning(
            "the embedded index at %s holds %d chunks, over the %d that Milvus Lite serves within the latency and start-up "
            "targets (storage.lite_max_chunks); queries and opening get slower as it grows. Move it to a Milvus server: "
            "`python -m app serve-store` on this machine, or Milvus Standalone/Distributed or Zilliz Cloud with "
            "storage.uri/storage.token (docs/scaling.md).",
            settings.storage.milvus_uri(),
            chunks,
            limit,
        )
    return chunks


def delete_files(store, file_ids: list[str]) -> None:
    """Delete every chunk of these files (vectors and BM25 terms live in the same rows)."""
    for start in range(0, len(file_ids), 200):
        store.client.delete(store.collection_name, filter=files_filter(file_ids[start : start + 200]))


def count_chunks(store) -> int:
    rows = store.client.query(store.collection_name, filter="", output_fields=["count(*)"])
    return int(rows[0]["count(*)"]) if rows else 0


def chunk_counts(store, file_ids: list[str]) -> dict[str, int]:
    """Chunks the store holds for each of these files."""
    counts: dict[str, int] = {}
    for file in file_ids:
        rows = store.client.query(store.collection_name, filter=files_filter([file]), output_fields=["count(*)"])
        counts[file] = int(rows[0]["count(*)"]) if rows else 0
    return counts
