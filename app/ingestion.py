"""Incremental ingestion of a folder into the index (docs/ingestion.md)."""

from __future__ import annotations

import hashlib
import logging
import os
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
from llama_index.core.schema import BaseNode, Document, TransformComponent
from llama_index.core.storage.docstore.keyval_docstore import KVDocumentStore

from app.chunking import DocumentChunker
from app.index_health import check_store
from app.ingest_progress import ChunkProgress, EmbedWithProgress
from app.manifest import FileRecord, Manifest, state_file
from app.readers import DEFAULT_MAX_BYTES, SUPPORTED_SUFFIXES, Piece, SkipFile, file_format, read_pieces
from app.shown_text import escape_bidi
from app.walker import ReadRefused, read_bounded, walk
from app.writer_lock import sole_writer
from integrations import node_ids
from integrations.adapters.milvus_store import MilvusStore
from integrations.adapters.sqlite_kvstore import SQLiteKVStore
from integrations.pending_vectors import PlaceholderVectors, embed_pending
from integrations.section_context import CONTEXT_KEY, section_spans
from settings import Settings
from settings.model import DEFAULT_IGNORE

logger = logging.getLogger(__name__)

EMBED_KEYS_EXCLUDED = ["source", "format", "page", "page_label", "language", CONTEXT_KEY]
LLM_KEYS_EXCLUDED = ["format", "language", CONTEXT_KEY]

Progress = Callable[[int, int, str], None]


@dataclass
class IngestReport:
    ingested: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)  # ingested again: the store had lost some of their chunks
    renamed: list[tuple[str, str]] = field(default_factory=list)  # (path in its folder, name shown): another folder has that path
    gone_roots: list[tuple[str, int]] = field(default_factory=list)  # (folder, files) held from folders that no longer exist
    ignored: int = 0  # supported files left out by ingestion.ignore and documentation layouts
    chunks_written: int = 0
    chunks_embedded: int = 0  # by the second pass (keywords first), including rows a killed run left
    seconds: float = 0.0

    def summary(self) -> str:
        return (
            f"{len(self.ingested)} ingested, {len(self.unchanged)} unchanged, {len(self.skipped)} skipped, "
            f"{len(self.removed)} removed, {self.ignored} left out by ingestion.ignore "
            f"({self.chunks_written} chunks written"
            + (f", {self.chunks_embedded} embedded after they were searchable by keywords" if self.chunks_embedded else "")
            + f" in {self.seconds:.1f}s)"
        )


class IndexState:
    """The index's SQLite state file: the pipeline docstore and the file manifest."""

    def __init__(self, index_dir: Path) -> None:
        index_dir.mkdir(parents=True, exist_ok=True)
        path = state_file(index_dir)
        self.manifest = Manifest(path, verify=True)  # first: a damaged file is named with its fix
        self.kvstore = SQLiteKVStore(path)
        self.docstore = KVDocumentStore(self.kvstore)

    def close(self) -> None:
        self.manifest.close()
        self.kvstore.close()


def iter_files(root: Path, exclude: Path | None = None) -> list[Path]:
    """Supported files under root (or root itself) as :func:`app.walker.walk` lists them with the default ignore globs."""
    return [found.path for found in walk(root.resolve(), _supported, DEFAULT_IGNORE, exclude=exclude).found]


def _supported(name: str) -> bool:
    return Path(name).suffix.lower() in SUPPORTED_SUFFIXES


def readable_name(name: str) -> str:
    """A file name as text that any store and terminal takes: undecodable bytes as U+FFFD, control characters and
    bidirectional controls (app.shown_text) escaped."""
    text = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return escape_bidi("".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) == "Cc" else ch for ch in text))


def root_name(base: Path) -> str:
    """A folder root as the manifest stores it."""
    return readable_name(str(base))


def without_nul(text: str) -> str:
    return text.replace("\x00", "")


def piece_documents(record: FileRecord, pieces: list[Piece]) -> list[Document]:
    documents = []
    spans = section_spans([p.section for p in pieces], [p.text for p in pieces])
    for number, piece in enumerate(pieces):
        metadata: dict[str, object] = {"source": record.source, "file_name": Path(record.source).name, "format": record.fmt}
        if piece.section:
            metadata["section"] = without_nul(piece.section)
        if spans[number] and piece.page is None:  # PDF pages are shown as windows of their chunks
            metadata[CONTEXT_KEY] = spans[number]
        if piece.page is not None:
            metadata["page"] = piece.page
        if piece.page_label:
            metadata["page_label"] = piece.page_label
        metadata.update(piece.extra)
        documents.append(
            Document(
                id_=node_ids.piece_id(record.file_id, number),
                text=without_nul(piece.text),
                metadata=metadata,
                excluded_embed_metadata_keys=EMBED_KEYS_EXCLUDED,
                excluded_llm_metadata_keys=LLM_KEYS_EXCLUDED,
            )
        )
    return documents


@dataclass
class IngestPlan:
    """What bringing the index up to date with ``root`` takes, decided from the manifest before any file is read."""

    root: Path
    base: Path
    todo: list[tuple[Path, FileRecord]]  # new or changed files, each with its new record
    removed: list[FileRecord]  # files the manifest holds under ``root`` that are gone


@dataclass
class FileOutcome:
    """One file read into piece documents, or the reason it was not."""

    record: FileRecord
    documents: list[Document] = field(default_factory=list)
    pieces: int = 0
    skip_reason: str | None = None
    unreadable: bool = False  # with no indexed version to keep, whatever it left is dropped


def read_file(path: Path, record: FileRecord, max_bytes: int = DEFAULT_MAX_BYTES) -> FileOutcome:
    """Read a file into piece documents; runs anywhere (the Ray engine calls it on workers)."""
    try:
        before = os.stat(path)
        if before.st_size != record.size:
            raise SkipFile("changed since the folder was listed; run again to ingest it")
        pieces = read_pieces(path, max_bytes)
        after = os.stat(path)
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            raise SkipFile("changed while it was read; run again to ingest it")
    except SkipFile as exc:
        return FileOutcome(record, skip_reason=str(exc))
    except ReadRefused as exc:
        return FileOutcome(record, skip_reason=f"not read: {exc.strerror}", unreadable=True)
    except (OSError, MemoryError, RecursionError, ValueError) as exc:
        return FileOutcome(record, skip_reason=f"unreadable: {type(exc).__name__}: {exc}", unreadable=True)
    return FileOutcome(record, piece_documents(record, pieces), len(pieces))


def chunking_failed(exc: Exception) -> str:
    return f"cannot be chunked and embedded: {type(exc).__name__}: {exc}"


class PrecomputedChunks(TransformComponent):
    """A pipeline step handing over chunks made elsewhere (chunked and embedded on Ray workers) for the documents let through."""

    _by_document: dict[str, list[BaseNode]] = PrivateAttr(default_factory=dict)

    def __init__(self, chunks: Sequence[BaseNode]) -> None:
        super().__init__()
        for chunk in chunks:
            self._by_document.setdefault(chunk.ref_doc_id or "", []).append(chunk)

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        return [chunk for node in nodes for chunk in self._by_document.get(node.id_, [])]


class DropReplaced(TransformComponent):
    """The last pipeline step: deletes the indexed chunks of changed pieces, once their new chunks are made."""

    replaced: list[str] = Field(default_factory=list, description="Piece ids whose old chunks go before the new ones are written.")
    _docstore: KVDocumentStore = PrivateAttr()
    _store: MilvusStore = PrivateAttr()

    def __init__(self, docstore: KVDocumentStore, store: MilvusStore) -> None:
        super().__init__()
        self._docstore, self._store = docstore, store

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        for ref in self.replaced:
            self._docstore.delete_ref_doc(ref, raise_error=False)
            self._store.delete_pieces([ref])
        self.replaced = []
        return nodes


class ReplacingPipeline(IngestionPipeline):
    """Docstore upserts that keep a changed piece's indexed chunks until its new chunks are made: the stock
    pipeline deletes them before chunking and embedding, so a file failing there lost its indexed version."""

    def _handle_upserts(self, nodes: Sequence[BaseNode]) -> Sequence[BaseNode]:
        drop = self.transformations[-1]
        assert isinstance(drop, DropReplaced) and self.docstore is not None
        fresh, drop.replaced = [], []
        for node in nodes:
            ref = node.ref_doc_id or node.id_
            known = self.docstore.get_document_hash(ref)
            if known != node.hash:
                fresh.append(node)
                if known:
                    drop.replaced.append(ref)
        return fresh


class Ingestor:
    """Brings an index up to date with a folder; another engine (app.ray_ingest) only supplies the batches."""

    def __init__(self, settings: Settings, embed_model, store: MilvusStore) -> None:
        self.settings = settings
        self.store = store
        self.state = IndexState(settings.storage.index_dir)
        self.embedding = EmbedWithProgress(embed_model=embed_model)
        # Keywords first: a batch is stored with placeholder vectors, embedded by embed_pending once every batch is in.
        first_pass = PlaceholderVectors(dim=store.dim) if settings.ingestion.keywords_first else self.embedding
        self.pipeline = self._pipeline(
            [
                DocumentChunker(
                    chunk_size=settings.ingestion.chunk_size,
                    chunk_overlap=settings.ingestion.chunk_overlap,
                    max_file_chunks=settings.ingestion.max_file_chunks,
                ),
                first_pass,
            ]
        )

    def _pipeline(self, transformations: list[TransformComponent]) -> IngestionPipeline:
        return ReplacingPipeline(
            transformations=[*transformations, DropReplaced(self.state.docstore, self.store)],
            docstore=self.state.docstore,
            vector_store=self.store.vector_store,
            docstore_strategy=DocstoreStrategy.UPSERTS,
            disable_cache=True,
        )

    def close(self) -> None:
        self.state.close()

    def ingest(
        self,
        root: Path,
        progress: Progress | None = None,
        batches: Callable[[IngestPlan], Iterator[tuple[list[FileOutcome], list[BaseNode] | None]]] | None = None,
        embedded: ChunkProgress | None = None,
        planned: Callable[[list[int]], None] | None = None,
        vectors: ChunkProgress | None = None,
    ) -> IngestReport:
        """Bring the index up to date with ``root``; ``batches`` turns the plan into read files, with their chunks if made elsewhere.

        ``planned`` hears the byte size of each file to read, in order, before the first is read; ``progress`` hears
        files as batches finish (and once before the first); ``embedded`` hears chunks as they are embedded here with
        their batch, ``vectors`` as the second pass embeds those stored first with their keywords only.
        """
        started = time.perf_counter()
        report = IngestReport()
        # Another ingest would "repair" this one's pending batch; readers meanwhile use this process's store.
        with sole_writer(self.settings.storage.index_dir, store=self.store.lite_socket()) as note:
            plan = self.plan(root, report)
            for record in plan.removed:
                self._forget(record)
                report.removed.append(record.source)
            manifest, done = self.state.manifest, 0
            if planned:
                planned([record.size for _, record in plan.todo])
            if progress and plan.todo:
                progress(0, len(plan.todo), plan.todo[0][1].source)
            self.embedding.listen(embedded)
            try:
                for outcomes, chunks in (batches or self.read_batches)(plan):
                    records = [outcome.record for outcome in outcomes]
                    previous = {record.file_id: manifest.get(record.file_id) for record in records}
                    manifest.mark_pending(records, previous)  # a killed run is repaired from this mark
                    self.write_batch(outcomes, previous, report, chunks)
                    done += len(outcomes)
                    if progress:
                        progress(done, len(plan.todo), outcomes[-1].record.source)

                def second_pass(done: int, total: int) -> None:
                    if done == 0:  # readers tell the time left from it
                        note("embedding", f"{time.time()} {total}")
                    if vectors:
                        vectors(done, total)

                # Also the rows a killed run left without vectors (its files are committed).
                report.chunks_embedded = embed_pending(self.store, self.embedding.embed_model, progress=second_pass)
            finally:
                self.embedding.listen(None)
        report.seconds = time.perf_counter() - started
        return report

    def read_batches(self, plan: IngestPlan) -> Iterator[tuple[list[FileOutcome], None]]:
        """The plan's files read here in steps of at most ``batch_files`` files and, past a step's first file,
        ``batch_mb`` megabytes (so large files commit in small steps); the pipeline chunks and embeds them."""
        limit = int(self.settings.ingestion.max_file_mb * 1024 * 1024)
        files, budget = self.settings.ingestion.batch_files, self.settings.ingestion.batch_mb * 1024 * 1024
        batch: list[tuple[Path, FileRecord]] = []
        size = 0
        for path, record in plan.todo:
            if batch and (len(batch) >= files or size + record.size > budget):
                yield [read_file(p, r, limit) for p, r in batch], None
                batch, size = [], 0
            batch.append((path, record))
            size += record.size
        if batch:
            yield [read_file(p, r, limit) for p, r in batch], None

    def plan(self, root: Path, report: IngestReport) -> IngestPlan:
        """Repair an interrupted run, then compare ``root`` with the manifest; reads only changed files' bytes (to hash them)."""
        root = root.resolve()
        if not root.exists():
            raise FileNotFoundError(f"{root} does not exist: give a folder or file to ingest")
        base = root if root.is_dir() else root.parent
        index_dir = self.settings.storage.index_dir.resolve()
        manifest = self.state.manifest
        self._repair_interrupted(report)
        health = check_store(self.store, manifest.all())
        lost = {record.file_id for record in health.missing}
        if lost:
            logger.warning("%s; their files are ingested again from their folders", health.message())

        todo: list[tuple[Path, FileRecord]] = []
        seen: set[str] = set()
        named: dict[str, str] = {}  # names given to new files in this run
        limit = int(self.settings.ingestion.max_file_mb * 1024 * 1024)
        listing = walk(root, _supported, self.settings.ingestion.ignore, exclude=index_dir)
        report.ignored += listing.ignored
        report.skipped.extend((readable_name(path.relative_to(base).as_posix()), reason) for path, reason in listing.skipped)
        for found in listing.found:
            path, relative = found.real, found.path.relative_to(base).as_posix()
            file = node_ids.file_id(base, relative)
            seen.add(file)
            known = manifest.get(file)
            source = known.source if known else self._new_name(base, relative, file, named, report)
            if known and file in lost:  # what is left of it goes, and it is ingested as a new file
                self._forget(known)
                report.restored.append(source)
                known = None
            if found.size > limit:
                report.skipped.append(
                    (source, f"file is {found.size / 1e6:.1f} MB, over the {self.settings.ingestion.max_file_mb:g} MB limit")
                )
                continue
            if known and known.state == "done" and known.size == found.size and known.mtime_ns == found.mtime_ns:
                report.unchanged.append(source)
                continue
            try:
                digest = hashlib.sha256(read_bounded(path, limit)).hexdigest()
            except OSError as exc:  # vanished, made unreadable or swapped since the folder was listed
                report.skipped.append((source, f"cannot be read: {exc.strerror or exc}"))
                continue
            fmt = file_format(found.path) or ""
            record = FileRecord(file, source, root_name(base), digest, found.size, found.mtime_ns, fmt, 0, 0, "pending", 0.0)
            if known and known.state == "done" and known.sha256 == digest:
                record.pieces, record.chunks, record.state, record.ingested_at = known.pieces, known.chunks, "done", known.ingested_at
                manifest.put(record)  # touched, not changed
                report.unchanged.append(source)
                continue
            todo.append((path, record))

        # Never pruned by themselves (an unmounted disk looks the same as a renamed folder): said, for `forget`.
        report.gone_roots = [
            (other, files) for other, files, _ in manifest.roots() if other != root_name(base) and not Path(other).is_dir()
        ]
        removed = [
            record
            for record in manifest.under_root(root_name(base))
            if record.file_id not in seen and (root.is_dir() or record.file_id == node_ids.file_id(base, root.name))
        ]
        return IngestPlan(root=root, base=base, todo=todo, removed=removed)

    def _new_name(self, base: Path, relative: str, file: str, named: dict[str, str], report: IngestReport) -> str:
        """The name a new file is shown under: its path in its folder, prefixed with the folder when another file has that name."""
        plain = readable_name(relative)
        for name in (plain, f"{readable_name(base.name)}/{plain}", f"{root_name(base)}/{plain}", f"{plain} ({file})"):
            taken = named.get(name) or next((r.file_id for r in self.state.manifest.named([name])), None)
            if taken in (None, file):
                named[name] = file
                if name != plain:
                    report.renamed.append((plain, name))
                return name
        raise AssertionError("a name with the file id is unique")

    def write_batch(
        self,
        outcomes: list[FileOutcome],
        previous: dict[str, FileRecord | None],
        report: IngestReport,
        chunks: Sequence[BaseNode] | None = None,
    ) -> None:
        """Commit a batch of files marked pending (``previous``: their records before, by file id); ``chunks`` made
        elsewhere are only written. Either way the docstore decides which pieces changed."""
        manifest = self.state.manifest
        readable: list[FileOutcome] = []
        for outcome in outcomes:
            record = outcome.record
            if outcome.skip_reason is None:
                readable.append(outcome)
                continue
            self._skip(record, outcome.skip_reason, previous[record.file_id], report, forget=outcome.unreadable)

        pipeline = self.pipeline if chunks is None else self._pipeline([PrecomputedChunks(chunks)])
        nodes, readable = self._run_pipeline(pipeline, readable, previous, report)
        report.chunks_written += len(nodes)

        for outcome in readable:
            record, piece_count = outcome.record, outcome.pieces
            old = previous[record.file_id]
            if old and old.pieces > piece_count:  # pieces that disappeared from a shorter file
                stale = [node_ids.piece_id(record.file_id, n) for n in range(piece_count, old.pieces)]
                self.store.delete_pieces(stale)
                self._forget_pieces(stale)
        # A new file's chunks are all written now; only files that had chunks before are counted in the store
        # (a filtered count scans every row on Milvus Lite, too slow to run per file in a large ingest).
        written = Counter((node_ids.parse_piece_id(node.ref_doc_id or "") or ("",))[0] for node in nodes)
        counts = self.store.chunk_counts([o.record.file_id for o in readable if previous[o.record.file_id]])
        for outcome in readable:
            record = outcome.record
            record.pieces = outcome.pieces
            record.chunks = counts.get(record.file_id, written[record.file_id])
            record.state = "done"
            record.ingested_at = time.time()
            manifest.put(record)
            report.ingested.append(record.source)

    def _run_pipeline(
        self,
        pipeline: IngestionPipeline,
        readable: list[FileOutcome],
        previous: dict[str, FileRecord | None],
        report: IngestReport,
    ) -> tuple[list[BaseNode], list[FileOutcome]]:
        """Run the pipeline over the files' documents; a file that cannot be chunked (ValueError) is skipped, not the batch,
        and its previously indexed version (still in the store: see ReplacingPipeline) is kept."""
        documents = [document for outcome in readable for document in outcome.documents]
        if not documents:
            return [], readable
        try:
            return pipeline.run(documents=documents, store_doc_text=False), readable
        except ValueError as exc:
            if len(readable) > 1:  # find the file at fault; what failed was not written, so running again is safe
                nodes: list[BaseNode] = []
                kept: list[FileOutcome] = []
                for outcome in readable:
                    more, ok = self._run_pipeline(pipeline, [outcome], previous, report)
                    nodes.extend(more)
                    kept.extend(ok)
                return nodes, kept
            record = readable[0].record
            self._skip(record, chunking_failed(exc), previous[record.file_id], report, forget=True)
            return [], []

    def _skip(self, record: FileRecord, reason: str, old: FileRecord | None, report: IngestReport, forget: bool) -> None:
        """Report a skipped file. The version indexed before stays until a readable one replaces it; without one,
        whatever the file left is dropped (``forget``) or only its pending record."""
        if old and old.state == "done":
            self.state.manifest.put(old)
            reason += "; the previously indexed version is kept"
        elif forget:
            self._forget(record)
        else:
            self.state.manifest.remove(record.file_id)
        report.skipped.append((record.source, reason))
        logger.warning("skipped %s: %s", record.source, reason)

    def _repair_interrupted(self, report: IngestReport) -> None:
        """Files left pending by a killed run (docs/ingestion.md: repaired, never half a file)."""
        manifest = self.state.manifest
        for record in manifest.pending():
            logger.info("repairing %s, left half-written by an interrupted run", record.source)
            old = manifest.replaced_version(record.file_id)
            if old is None:
                self._forget(record)
            else:
                old.sha256, old.mtime_ns = "", -1  # never "unchanged": read and compared piece by piece
                manifest.put(old)
            report.repaired.append(record.source)

    def forget_root(self, root: str) -> list[FileRecord]:
        """Remove every file the index holds from the folder ``root`` (as `python -m app sources` lists it)."""
        with sole_writer(self.settings.storage.index_dir, store=self.store.lite_socket()):
            records = self.state.manifest.under_root(root)
            for record in records:
                self._forget(record)
        return records

    def _forget(self, record: FileRecord) -> None:
        self.store.delete_files([record.file_id])
        pieces = max(record.pieces, 0) or self._known_pieces(record.file_id)
        self._forget_pieces([node_ids.piece_id(record.file_id, number) for number in range(pieces)])
        self.state.manifest.remove(record.file_id)

    def _forget_pieces(self, refs: list[str]) -> None:
        for ref in refs:
            self.state.docstore.delete_ref_doc(ref, raise_error=False)
            self.state.docstore.delete_document(ref, raise_error=False)

    def _known_pieces(self, file: str) -> int:
        pieces = (node_ids.parse_piece_id(ref) for ref in self.state.docstore.get_all_document_hashes().values())
        return 1 + max((piece[1] for piece in pieces if piece and piece[0] == file), default=-1)
