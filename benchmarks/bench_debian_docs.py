"""Ingest Debian documentation packages as they ship, one fresh index each, and print what the walker and readers did.

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (bench_scale's cache, fetched once);
each package's whole unpacked tree is ingested by the real Ingestor with the packaged local embedder, as
``python -m app ingest`` does. Per package: files ingested, files skipped grouped by reason, files left out by
``ingestion.ignore``, chunks, tokens embedded (word pieces the model runs on: each text cut at the embedder's
``max_tokens``, padding not counted), wall time and chunks/s. ``--raw`` also times the raw embedder on the same
chunk texts (no reading, no store). ``--chunk-only`` stops after chunking: chunks, tokens and the embedded
metadata's tokens, with the chunk settings of ``DOCSRAG_INGESTION__*``.

Examples (niced; they use both cores)::

    nice -n 10 .venv/bin/python benchmarks/bench_debian_docs.py --packages python-requests-doc sqlite3-doc
    nice -n 10 .venv/bin/python benchmarks/bench_debian_docs.py                       # + python3.11-doc (~50k chunks)
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_scale import fetch_packages  # noqa: E402

PACKAGES = ["python-requests-doc", "sqlite3-doc", "python3.11-doc"]
_DETAIL = re.compile(r"\s*\(.*|:.*|\d[\d.,]*")


def reason_kind(reason: str) -> str:
    """A skip reason without its file-specific details, to count skips by kind."""
    return _DETAIL.sub("", reason).strip() or reason


def embedded_texts() -> tuple[list[str], object]:
    """Texts passed to the embedder, collected through LlamaIndex's instrumentation events; returns (list, handler)."""
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.instrumentation.events.embedding import EmbeddingEndEvent

    texts: list[str] = []

    class Collect(BaseEventHandler):
        def handle(self, event, **kwargs) -> None:
            if isinstance(event, EmbeddingEndEvent):
                texts.extend(event.chunks)

    handler = Collect()
    get_dispatcher().add_event_handler(handler)
    return texts, handler


def ingest_package(root: Path, index: Path, raw: bool) -> dict:
    from llama_index.core.instrumentation import get_dispatcher

    from app.composition import build_ingestor, open_runtime
    from settings import load_settings

    shutil.rmtree(index, ignore_errors=True)
    settings = load_settings("local", storage={"index_dir": str(index)})
    runtime = open_runtime(settings)
    ingestor = build_ingestor(runtime)
    texts, handler = embedded_texts()
    try:
        started = time.perf_counter()
        report = ingestor.ingest(root)
        seconds = time.perf_counter() - started
    finally:
        get_dispatcher().event_handlers.remove(handler)
        ingestor.close()
    result = {
        "files": len(report.ingested),
        "skipped": dict(Counter(reason_kind(reason) for _, reason in report.skipped).most_common()),
        "left_out_by_ignore": report.ignored,
        "chunks": report.chunks_written,
        "tokens": runtime.embed_model.count_tokens(texts),
        "seconds": round(seconds, 1),
        "chunks_per_s": round(report.chunks_written / seconds, 1) if seconds else 0.0,
    }
    if raw and texts:
        started = time.perf_counter()
        runtime.embed_model.get_text_embedding_batch(texts)
        seconds = time.perf_counter() - started
        result["raw_embedder_chunks_per_s"] = round(len(texts) / seconds, 1)
        result["raw_embedder_tokens_per_s"] = round(result["tokens"] / seconds)
    runtime.close()
    return result


def chunk_package(root: Path, index: Path) -> dict:
    """Walk, read and chunk as the ingest does, embedding nothing: chunks, tokens and the embedded metadata's share."""
    from llama_index.core.schema import MetadataMode

    from app.composition import build_ingestor, open_runtime
    from app.ingestion import IngestReport
    from settings import load_settings

    shutil.rmtree(index, ignore_errors=True)
    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
    ingestor = build_ingestor(runtime)
    chunker, chunks, refused = ingestor.pipeline.transformations[0], [], 0
    try:
        for outcomes, _ in ingestor.read_batches(ingestor.plan(root, IngestReport())):
            for outcome in outcomes:
                try:
                    chunks.extend(chunker(outcome.documents))
                except ValueError:  # over ingestion.max_file_chunks: the ingest skips the file
                    refused += 1
    finally:
        ingestor.close()
    count = runtime.embed_model.count_tokens
    metadata = count([chunk.get_metadata_str(MetadataMode.EMBED) for chunk in chunks]) - 2 * len(chunks)
    result = {
        "chunks": len(chunks),
        "tokens": count([chunk.get_content(metadata_mode=MetadataMode.EMBED) for chunk in chunks]),
        "metadata_tokens": metadata,  # the file name and section path embedded beside each chunk
        "files_refused_by_chunker": refused,
    }
    runtime.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=PACKAGES, help="Debian documentation packages (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".docsrag" / "bench-cache", help="downloaded and unpacked packages")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".docsrag" / "bench-debian", help="indexes built here")
    parser.add_argument("--raw", action="store_true", help="also time the raw embedder on the same chunk texts")
    parser.add_argument("--chunk-only", action="store_true", help="walk, read and chunk only: chunks and tokens, nothing embedded")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    roots = fetch_packages(args.cache_dir, args.packages)
    results = {}
    for package, root in zip(args.packages, roots, strict=True):
        index = args.work_dir / package
        results[package] = chunk_package(root, index) if args.chunk_only else ingest_package(root, index, args.raw)
        print(f"{package}: {json.dumps(results[package])}", flush=True)
    if args.chunk_only:
        return 0
    print(f"\n{'package':<22} {'files':>6} {'skipped':>8} {'left out':>9} {'chunks':>7} {'tokens':>9} {'time s':>7} {'chunks/s':>9}")
    for package, r in results.items():
        skipped = sum(r["skipped"].values())
        print(
            f"{package:<22} {r['files']:>6} {skipped:>8} {r['left_out_by_ignore']:>9} {r['chunks']:>7} "
            f"{r['tokens']:>9} {r['seconds']:>7} {r['chunks_per_s']:>9}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
