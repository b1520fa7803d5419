"""Ingest Debian documentation packages as they ship and time when questions get answers, beside the LlamaIndex starter.

Packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` (bench_scale's cache, fetched once).
Per package, in one run:

- docsrag: ``python -m app ingest`` of the whole unpacked tree into a fresh index, in a child process. Meanwhile this
  process asks the package's question with ``python -m app ask --json`` from another process every few seconds, as a
  user in a second terminal would: **time to the first cited answer** (keywords first: BM25 over the files committed
  so far), then when every file was committed (all searchable by keywords) and when the ingest ended (**full hybrid**:
  every chunk has its meaning vector). Chunks, word pieces embedded (each text cut at the embedder's ``max_tokens``,
  padding not counted), chunks/s over the whole ingest, and the **raw embedder** timed on a sample of the same
  stored chunk texts (no reading, no store), with the ratio.
- starter: the LlamaIndex starter a user would write (``SimpleDirectoryReader`` over the same tree's documentation formats +
  ``VectorStoreIndex.from_documents``, in memory, default chunking) with the same local embedder, in a child
  process: nothing answers before its index is built.

``--chunk-only`` stops after chunking: chunks, tokens, the embedded metadata's tokens and the pages' own word pieces
(``pieces_per_page_piece`` = tokens / page tokens), with the chunk settings of ``DOCSRAG_INGESTION__*``.

Examples (niced; they use both cores)::

    nice -n 10 .venv/bin/python benchmarks/bench_debian_docs.py --packages python-requests-doc sqlite3-doc
    nice -n 10 .venv/bin/python benchmarks/bench_debian_docs.py --packages python3.11-doc   # ~50k chunks, ~20 min
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_scale import fetch_packages  # noqa: E402

PACKAGES = ["python-requests-doc", "sqlite3-doc", "python3.11-doc"]
#: A question per package, asked from another process while its ingest runs (any cited answer counts as the first).
QUESTIONS = {
    "python-requests-doc": "How do I set a timeout on a request?",
    "sqlite3-doc": "How do I create an index on a table?",
    "python3.11-doc": "How do I read a file line by line?",
}
DEFAULT_QUESTION = "How do I get started?"
ASK_EVERY_S = 5.0


def _app(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def ask(index: Path, question: str) -> dict | None:
    """`python -m app ask --json` from its own process, as a user in another terminal; None when it failed."""
    done = subprocess.run(_app("ask", question, "--index", str(index), "--json"), cwd=REPO, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else None


def ingest_package(root: Path, index: Path, question: str, raw_sample: int) -> dict:
    """`python -m app ingest` in a child process; this process asks ``question`` through `python -m app ask` every few
    seconds until an answer cites a source, and follows the manifest. Then the raw embedder on stored chunk texts."""
    from app.manifest import Manifest, state_file

    shutil.rmtree(index, ignore_errors=True)
    started = time.perf_counter()
    ingest = subprocess.Popen(_app("ingest", str(root), "--index", str(index), "-q"), cwd=REPO, stdout=subprocess.PIPE, text=True)
    first, asks, files_seen = None, 0, []  # files_seen: (seconds, files committed)
    while ingest.poll() is None:
        time.sleep(1.0 if first else ASK_EVERY_S)
        if state_file(index).is_file():
            manifest = Manifest(state_file(index), read_only=True)
            files_seen.append((time.perf_counter() - started, manifest.done()))
            manifest.close()
            if len(files_seen) % 60 == 0:
                print(f"{files_seen[-1][0]:.0f} s: {files_seen[-1][1]} files committed", file=sys.stderr, flush=True)
        if first is None and files_seen and files_seen[-1][1]:
            answer, asks = ask(index, question), asks + 1
            if answer and any(source["cited"] for source in answer["sources"]):
                first = {
                    "seconds": round(time.perf_counter() - started, 1),
                    "cited": [source["source"] for source in answer["sources"] if source["cited"]][:3],
                    "answer": answer["answer"][:160],
                    "notices": [n for n in answer["notices"] if "ingest" in n or "keywords" in n],
                }
                print(f"first cited answer after {first['seconds']} s: {json.dumps(first)}", file=sys.stderr, flush=True)
    out, _ = ingest.communicate()
    seconds = time.perf_counter() - started
    summary = out.strip().splitlines()[-1] if out.strip() else ""
    final_files = files_seen[-1][1] if files_seen else 0
    result = {
        "summary": summary,
        "returncode": ingest.returncode,
        "first_cited_answer": first,
        "asks": asks,
        "all_files_searchable_s": next((round(t, 1) for t, n in files_seen if n == final_files), None) if final_files else None,
        "full_hybrid_s": round(seconds, 1),
    }
    result.update(stored_chunks(index, raw_sample))
    result["chunks_per_s"] = round(result["chunks"] / seconds, 1)
    if "raw_embedder_chunks_per_s" in result:
        result["vs_raw"] = round(result["chunks_per_s"] / result["raw_embedder_chunks_per_s"], 2)
    return result


def stored_chunks(index: Path, raw_sample: int) -> dict:
    """Chunks and embedded word pieces in the finished index, and the raw embedder timed on a sample of their texts."""
    import random

    from llama_index.core.schema import MetadataMode

    from app.composition import open_runtime
    from integrations.adapters.milvus_store import hit_node
    from settings import load_settings

    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
    try:
        rows = runtime.store.all_rows(["_node_content", "_node_type", "text"])
        texts = [hit_node(row).get_content(MetadataMode.EMBED) for batch in rows for row in batch]
        result = {"chunks": len(texts), "tokens": runtime.embed_model.count_tokens(texts)}
        if raw_sample and texts:
            sample = random.Random(0).sample(texts, min(raw_sample, len(texts)))
            started = time.perf_counter()
            runtime.embed_model.get_text_embedding_batch(sample)
            result["raw_embedder_chunks_per_s"] = round(len(sample) / (time.perf_counter() - started), 1)
            result["raw_sample"] = len(sample)
        return result
    finally:
        runtime.close()


STARTER = """
import json, sys, time
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
from integrations.adapters.local_embedding import LocalMiniLMEmbedding
from app.readers import TEXT_FORMATS
started = time.perf_counter()
embed_model = LocalMiniLMEmbedding()
# The documentation formats (no code files such as the build's JavaScript); exclude_hidden would drop the whole cache
# under .docsrag/.
reader = SimpleDirectoryReader(sys.argv[1], recursive=True, required_exts=[*sorted(TEXT_FORMATS), ".pdf"], exclude_hidden=False)
documents = reader.load_data()
index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)
built = time.perf_counter() - started
nodes = list(index.docstore.docs.values())
hits = index.as_retriever(similarity_top_k=3).retrieve(sys.argv[2])
print(json.dumps({
    "documents": len(documents), "chunks": len(nodes),
    "tokens": embed_model.count_tokens([n.get_content(metadata_mode="embed") for n in nodes]),
    "first_answer_s": round(time.perf_counter() - started, 1), "full_index_s": round(built, 1),
    "chunks_per_s": round(len(nodes) / built, 1), "top_hit": hits[0].node.metadata.get("file_name") if hits else None,
}))
"""


def starter_package(root: Path, question: str) -> dict:
    """The LlamaIndex starter a user would write (SimpleDirectoryReader over the documentation formats + VectorStoreIndex,
    in memory, default 1024-token chunks) with the same local embedder, in a child process; nothing answers before its
    index is built."""
    done = subprocess.run([sys.executable, "-c", STARTER, str(root), question], cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def page_tokens(texts: list[str]) -> int:
    """Word pieces of the pages' own text, uncut and without special tokens: what pieces embedded per page piece divide by."""
    from tokenizers import Tokenizer

    from integrations.adapters.local_embedding import TOKENIZER_FILE

    tokenizer = Tokenizer.from_file(str(TOKENIZER_FILE))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return sum(len(encoding.ids) for encoding in tokenizer.encode_batch(texts, add_special_tokens=False))


def metadata_once_tokens(chunks: list, count) -> int:
    """Word pieces embedded if each chunk's text were embedded alone and each distinct embedded metadata string (section
    path, or file name) once: issue 29's alternative (benchmarks/section_vector_experiment.py)."""
    from llama_index.core.schema import MetadataMode

    heads = {chunk.get_metadata_str(MetadataMode.EMBED) for chunk in chunks}
    return count([chunk.get_content(metadata_mode=MetadataMode.NONE) for chunk in chunks]) + count(sorted(heads))


def chunk_package(root: Path, index: Path) -> dict:
    """Walk, read and chunk as the ingest does, embedding nothing: chunks, tokens, the embedded metadata's share and the
    pages' own word pieces."""
    from llama_index.core.schema import MetadataMode

    from app.composition import build_ingestor, open_runtime
    from app.ingestion import IngestReport
    from settings import load_settings

    shutil.rmtree(index, ignore_errors=True)
    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
    ingestor = build_ingestor(runtime)
    chunker, chunks, pages, refused = ingestor.pipeline.transformations[0], [], [], 0
    try:
        for outcomes, _ in ingestor.read_batches(ingestor.plan(root, IngestReport())):
            for outcome in outcomes:
                try:
                    chunks.extend(chunker(outcome.documents))
                except ValueError:  # over ingestion.max_file_chunks: the ingest skips the file
                    refused += 1
                else:
                    pages.extend(document.text for document in outcome.documents)
    finally:
        ingestor.close()
    count = runtime.embed_model.count_tokens
    metadata = count([chunk.get_metadata_str(MetadataMode.EMBED) for chunk in chunks]) - 2 * len(chunks)
    result = {
        "chunks": len(chunks),
        "tokens": count([chunk.get_content(metadata_mode=MetadataMode.EMBED) for chunk in chunks]),
        "metadata_tokens": metadata,  # the file name and section path embedded beside each chunk
        "page_tokens": page_tokens(pages),
        "tokens_metadata_once": metadata_once_tokens(chunks, count),
        "files_refused_by_chunker": refused,
    }
    result["pieces_per_page_piece"] = round(result["tokens"] / max(result["page_tokens"], 1), 2)
    runtime.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", default=PACKAGES, help="Debian documentation packages (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".docsrag" / "bench-cache", help="downloaded and unpacked packages")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".docsrag" / "bench-debian", help="indexes built here")
    parser.add_argument("--raw-sample", type=int, default=3000, help="chunk texts the raw embedder is timed on (0: not timed)")
    parser.add_argument("--no-starter", action="store_true", help="leave out the LlamaIndex starter")
    parser.add_argument("--chunk-only", action="store_true", help="walk, read and chunk only: chunks and tokens, nothing embedded")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    roots = fetch_packages(args.cache_dir, args.packages)
    results = {}
    for package, root in zip(args.packages, roots, strict=True):
        index, question = args.work_dir / package, QUESTIONS.get(package, DEFAULT_QUESTION)
        if args.chunk_only:
            results[package] = chunk_package(root, index)
        else:
            results[package] = {"docsrag": ingest_package(root, index, question, args.raw_sample)}
            if not args.no_starter:
                results[package]["starter"] = starter_package(root, question)
        print(f"{package}: {json.dumps(results[package])}", flush=True)
    if args.chunk_only:
        return 0
    print(
        f"\n{'package':<20} {'run':<8} {'chunks':>7} {'tokens':>9} {'1st answer s':>12} {'full s':>7} {'chunks/s':>9} {'raw chunks/s':>12}"
    )
    for package, runs in results.items():
        ours, starter = runs["docsrag"], runs.get("starter", {})
        first = (ours["first_cited_answer"] or {}).get("seconds", "-")
        print(
            f"{package:<20} {'docsrag':<8} {ours['chunks']:>7} {ours['tokens']:>9} {first:>12} {ours['full_hybrid_s']:>7} "
            f"{ours['chunks_per_s']:>9} {ours.get('raw_embedder_chunks_per_s', '-'):>12}"
        )
        if "chunks" in starter:
            print(
                f"{'':<20} {'starter':<8} {starter['chunks']:>7} {starter['tokens']:>9} {starter['first_answer_s']:>12} "
                f"{starter['full_index_s']:>7} {starter['chunks_per_s']:>9} {'':>12}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
