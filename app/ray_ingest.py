"""Large ingests on Ray Data (optional extra): files parsed and chunked by Ray tasks, embedded by Ray actors, committed
by :meth:`app.ingestion.Ingestor.ingest` (docs/scaling.md)."""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from app.ingestion import FileOutcome, Ingestor, IngestPlan, IngestReport, Progress, chunking_failed, read_file
from app.manifest import FileRecord
from integrations.node_ids import parse_piece_id
from settings import Settings

logger = logging.getLogger(__name__)

SCALE_REQUIREMENTS = "requirements-scale.txt"
REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "integrations", "settings")
#: Logical CPUs of one embedding actor and of one parse task: the actors keep the cores busy, parse tasks fit beside them.
EMBED_ACTOR_CPUS = 0.9
PARSE_TASK_CPUS = 0.1
FILES_PER_PARSE_TASK = 4
#: Columns a parse task returns per file; the embedding actors add "vectors".
FIELDS = ("i", "pieces", "skip_reason", "unreadable", "documents", "chunks")


def require_ray():
    """Import Ray Data, or fail naming the file to install."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise RuntimeError(
            f"--engine ray needs Ray Data, an optional extra: install it with `.venv/bin/pip install -r {SCALE_REQUIREMENTS}` "
            f"(or ingest with the default engine). Import error: {exc}"
        ) from exc
    return ray


def start_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to ``address`` or start a local Ray; returns whether this call started it (and so should stop it)."""
    ray = require_ray()
    if ray.is_initialized():
        return False
    if address:
        runtime_env: dict[str, Any] = {"py_modules": [str(REPO / package) for package in PACKAGES]}
    else:
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
        runtime_env = {"env_vars": {"PYTHONPATH": path}}
    started = time.perf_counter()
    try:
        ray.init(
            address=address,
            num_cpus=None if address else (num_cpus or os.cpu_count() or 1),
            include_dashboard=False,
            log_to_driver=logger.isEnabledFor(logging.DEBUG),
            logging_level=logging.WARNING,
            runtime_env=runtime_env,
        )
    except Exception as exc:  # ray raises ConnectionError, RuntimeError, ValueError... depending on the address
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise RuntimeError(f"cannot start {where}: {exc}. Check --address (ray://host:10001 or auto) or omit it for a local Ray") from exc
    logger.info("Ray ready in %.1fs: %s", time.perf_counter() - started, ray.cluster_resources())
    return True


def known_piece_hashes(ingestor: Ingestor, file_ids: list[str]) -> dict[str, dict[str, str]]:
    """Per file id, the docstore's hash of each of its pieces (piece id -> hash): workers skip unchanged pieces with it."""
    wanted = set(file_ids)
    out: dict[str, dict[str, str]] = {}
    for digest, piece_id in ingestor.state.docstore.get_all_document_hashes().items():
        file = (parse_piece_id(piece_id) or ("",))[0]
        if file in wanted:
            out.setdefault(file, {})[piece_id] = digest
    return out


def _column(batch: dict[str, Any], name: str) -> list:
    value = batch[name]
    return value.tolist() if hasattr(value, "tolist") else list(value)


def parse_and_chunk(batch: dict[str, Any], chunk_size: int, chunk_overlap: int) -> dict[str, list]:
    """Ray task: read files, keep changed pieces, chunk them (serialized for the next stage)."""
    from llama_index.core.storage.docstore.utils import doc_to_json

    from app.chunking import DocumentChunker

    chunker = DocumentChunker(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    out: dict[str, list] = {name: [] for name in FIELDS}
    datas = _column(batch, "data") if "data" in batch else None
    for n, (index, record_json, path, known_json) in enumerate(
        zip(_column(batch, "i"), _column(batch, "record"), _column(batch, "path"), _column(batch, "known"), strict=True)
    ):
        record = FileRecord(**json.loads(record_json))
        if datas is not None:  # a remote cluster: the file's bytes came along
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / Path(record.source).name
                local.write_bytes(datas[n])
                outcome = read_file(local, record)
        else:
            outcome = read_file(Path(path), record)
        known = json.loads(known_json)
        changed = [document for document in outcome.documents if known.get(document.id_) != document.hash]
        try:
            chunks = chunker(changed) if changed else []
        except ValueError as exc:  # as in Ingestor.write_batch: the file is skipped, not the run
            outcome = FileOutcome(record, skip_reason=chunking_failed(exc), unreadable=True)
            changed, chunks = [], []
        documents, chunk_texts = (json.dumps([doc_to_json(node) for node in nodes]) for nodes in (changed, chunks))
        row = (index, outcome.pieces, outcome.skip_reason or "", outcome.unreadable, documents, chunk_texts)
        for name, value in zip(FIELDS, row, strict=True):
            out[name].append(value)
    return out


class ChunkEmbedder:
    """Ray actor: embeds every chunk of a batch of files with the configured embedder (loaded once per actor)."""

    def __init__(self, settings: Settings, threads: int = 1) -> None:
        from app.composition import build_embed_model

        embedding = settings.embedding.model_copy(update={"threads": threads})
        self.embed_model = build_embed_model(settings.model_copy(update={"embedding": embedding}))

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from llama_index.core.storage.docstore.utils import json_to_doc

        per_file = [[json_to_doc(item) for item in json.loads(text)] for text in _column(batch, "chunks")]
        flat = [chunk for chunks in per_file for chunk in chunks]
        if flat:
            self.embed_model(flat)  # as the pipeline's embedding step does: sets chunk.embedding from its embed-mode text
        out = {name: _column(batch, name) for name in FIELDS}
        out["vectors"] = [np.asarray([chunk.embedding for chunk in chunks], dtype=np.float32).tobytes() for chunks in per_file]
        return out


def _rows(todo: list[tuple[Path, FileRecord]], known: dict[str, dict[str, str]], ship_bytes: bool) -> list[dict[str, Any]]:
    rows = [
        {"i": index, "record": json.dumps(asdict(record)), "path": str(path), "known": json.dumps(known.get(record.file_id, {}))}
        for index, (path, record) in enumerate(todo)
    ]
    if ship_bytes:  # a remote cluster: the files' bytes go along
        for row, (path, _) in zip(rows, todo, strict=True):
            row["data"] = path.read_bytes()
    return rows


def _decode(batch: dict[str, Any], todo: list[tuple[Path, FileRecord]]) -> Iterator[tuple[FileOutcome, list]]:
    from llama_index.core.storage.docstore.utils import json_to_doc

    for index, pieces, reason, unreadable, documents, chunks, vectors in zip(
        *(_column(batch, name) for name in (*FIELDS, "vectors")),
        strict=True,
    ):
        record = todo[index][1]
        docs = [json_to_doc(item) for item in json.loads(documents)]
        nodes = [json_to_doc(item) for item in json.loads(chunks)]
        matrix = np.frombuffer(vectors, dtype=np.float32).reshape(len(nodes), -1) if nodes else []
        for node, vector in zip(nodes, matrix, strict=True):
            node.embedding = vector.tolist()
        outcome = FileOutcome(record, docs, int(pieces), reason or None, bool(unreadable))
        yield outcome, nodes


def ray_ingest(
    ingestor: Ingestor,
    root: Path,
    *,
    address: str | None = None,
    progress: Progress | None = None,
    num_cpus: int | None = None,
    actors: int | None = None,
) -> IngestReport:
    """Bring the index up to date with ``root`` using Ray Data; the result matches :meth:`Ingestor.ingest`."""
    require_ray()
    return ingestor.ingest(root, progress, batches=lambda plan: _ray_batches(ingestor, plan, address, num_cpus, actors))


def _ray_batches(
    ingestor: Ingestor, plan: IngestPlan, address: str | None, num_cpus: int | None, actors: int | None
) -> Iterator[tuple[list[FileOutcome], list]]:
    """The plan's files parsed, chunked and embedded on Ray, ``batch_files`` at a time, in the order they finish."""
    todo = plan.todo
    if not todo:  # nothing to parse or embed: don't pay for starting Ray
        return
    import ray

    settings = ingestor.settings
    we_started = start_ray(address, num_cpus)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        pool = actors or cpus
        known = known_piece_hashes(ingestor, [record.file_id for _, record in todo])
        blocks = math.ceil(len(todo) / FILES_PER_PARSE_TASK)
        dataset = (
            ray.data.from_items(_rows(todo, known, ship_bytes=bool(address)), override_num_blocks=blocks)
            .map_batches(
                parse_and_chunk,
                batch_size=FILES_PER_PARSE_TASK,
                fn_kwargs={"chunk_size": settings.ingestion.chunk_size, "chunk_overlap": settings.ingestion.chunk_overlap},
                num_cpus=PARSE_TASK_CPUS,
            )
            .map_batches(
                ChunkEmbedder,
                batch_size=FILES_PER_PARSE_TASK,
                fn_constructor_kwargs={"settings": settings, "threads": max(1, cpus // pool)},
                compute=ray.data.ActorPoolStrategy(size=pool),
                num_cpus=EMBED_ACTOR_CPUS,
            )
        )
        for batch in dataset.iter_batches(batch_size=settings.ingestion.batch_files, batch_format="numpy", prefetch_batches=1):
            results = list(_decode(batch, todo))
            yield [outcome for outcome, _ in results], [node for _, nodes in results for node in nodes]
    except ray.exceptions.RayError as exc:
        raise RuntimeError(
            f"the Ray ingest failed: {exc}. Files committed so far stay in the index; run the ingest again to finish the rest"
        ) from exc
    finally:
        if we_started:
            ray.shutdown()
