"""Ingest and query speed of the embedded default, as the CLI runs it: medians of >= 3 runs, printed as a table.

Measures, each in fresh ``python -m app`` processes under ``/usr/bin/time -v`` (wall time, peak RSS):

* ingest throughput (chunks/s) of ORD-QA's 32 Markdown files and of a generated 200-page PDF
  (``tests/docfactory.make_long_pdf``), next to the raw embedder throughput on the same chunk texts
  (chunked as ingestion does, embedded in one process with no store);
* an unchanged re-ingest of each (the manifest skips every file: no reading, no embedding);
* query latency p50/p95 per stage (retrieve, rerank, generate, total) from ``python -m app eval`` with
  answers over the 90 ORD-QA questions, on an index of ORD-QA plus Debian documentation (``--packages``,
  default python3.11-doc, fetched with apt-get download + dpkg -x into ``--cache-dir``) filling it to
  ``--latency-chunks`` chunks (default 5,000);
* peak RSS of ``python -m app ask`` on that index.

Run (uses both cores; ~15 min here): .venv/bin/python benchmarks/bench_ingest.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from benchmarks.proc_tree import TreePeak  # noqa: E402

ORDQA = REPO / "eval" / "ord-qa"
CHUNKS_WRITTEN = re.compile(r"\((\d+) chunks written")
PEAK_RSS = re.compile(r"Maximum resident set size \(kbytes\): (\d+)")
WALL = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)")
ASK_QUESTION = "How do I set the routing alpha of a net to trade wirelength against path depth?"
ORDQA_CHUNKS = 1359  # python -m app ingest of ORD-QA's docs with the default settings


def timed_cli(*args: str) -> tuple[str, float, float]:
    """Run ``python -m app ARGS`` under /usr/bin/time -v: (stdout, wall seconds, peak RSS in MB).

    The peak is the app process's (exact, from time) plus its Milvus Lite server child's (sampled VmHWM).
    """
    command = ["/usr/bin/time", "-v", sys.executable, "-m", "app", *args]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreePeak(proc.pid) as tree:
        stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"python -m app {' '.join(args)} failed:\n{stderr[-2000:]}")
    hours, minutes, seconds = WALL.search(stderr).groups()
    wall = int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    app_peak = int(PEAK_RSS.search(stderr).group(1)) / 1024
    return stdout, wall, max(app_peak, tree.peak_mb)  # the tree: the app process and its server child


def raw_embedder_rate(docs: Path, runs: int) -> tuple[float, int]:
    """Chunks/s of the packaged embedder alone on the chunk texts ingestion would embed (median of runs)."""
    from llama_index.core.schema import MetadataMode

    from app.chunking import DocumentChunker
    from app.composition import build_embed_model
    from app.ingestion import iter_files, piece_documents
    from app.readers import file_format, read_pieces
    from settings import load_settings

    settings = load_settings("local")
    documents = []
    for path in iter_files(docs):
        source = path.relative_to(docs).as_posix()
        documents.extend(piece_documents(source, file_format(path) or "", read_pieces(path)))
    chunker = DocumentChunker(chunk_size=settings.ingestion.chunk_size, chunk_overlap=settings.ingestion.chunk_overlap)
    texts = [chunk.get_content(metadata_mode=MetadataMode.EMBED) for chunk in chunker(documents)]
    embedder = build_embed_model(settings)
    embedder.get_text_embedding_batch(texts[:16])  # load the model outside the timing
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        embedder.get_text_embedding_batch(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    return statistics.median(rates), len(texts)


def ingest_runs(docs: Path, work: Path, runs: int) -> dict[str, float]:
    """Fresh ingests and unchanged re-ingests of one corpus: medians of chunks/s, seconds and peak RSS."""
    rates, peaks, reingest = [], [], []
    chunks = 0
    for run in range(runs):
        index = work / f"index-{docs.name}-{run}"
        out, wall, peak = timed_cli("ingest", str(docs), "--index", str(index), "-q")
        chunks = int(CHUNKS_WRITTEN.search(out).group(1))
        rates.append(chunks / wall)
        peaks.append(peak)
        out, wall, _ = timed_cli("ingest", str(docs), "--index", str(index), "-q")
        assert "0 ingested" in out, out
        reingest.append(wall)
        shutil.rmtree(index)
    return {
        "chunks": chunks,
        "ingest_chunks_per_s": statistics.median(rates),
        "ingest_peak_rss_mb": statistics.median(peaks),
        "reingest_s": statistics.median(reingest),
    }


def latency_runs(work: Path, target_chunks: int, runs: int, cache: Path, packages: list[str]) -> dict[str, float]:
    """Per-stage latency (eval with answers over ORD-QA) and ask's peak RSS on an index of >= target_chunks.

    The index holds ORD-QA's docs plus Debian documentation (``packages``, fetched by bench_scale's
    apt-get download + dpkg -x into ``cache``) taken file by file until the target is reached.
    """
    from benchmarks.bench_scale import candidate_files, fetch_packages, link_into, pick_exact
    from settings import load_settings

    docs = work / "latency-docs"
    shutil.copytree(ORDQA / "docs", docs / "ord-qa")
    filler, _ = pick_exact(candidate_files(fetch_packages(cache, packages)), target_chunks - ORDQA_CHUNKS, load_settings("local"))
    link_into(docs / "debian", filler)
    index = work / "latency-index"
    out, _, _ = timed_cli("ingest", str(docs), "--index", str(index), "-q")
    metrics: dict[str, list[float]] = {}
    for _ in range(runs):
        stdout, _, _ = timed_cli(
            "eval", str(ORDQA / "questions.jsonl"), "--index", str(index), "--out", str(work / "results.jsonl"), "--json", "-q"
        )
        for key, value in json.loads(stdout).items():
            if key.endswith(("_p50", "_p95")):
                metrics.setdefault(key, []).append(value)
        _, wall, peak = timed_cli("ask", ASK_QUESTION, "--index", str(index))
        metrics.setdefault("ask_wall_s", []).append(wall)
        metrics.setdefault("ask_peak_rss_mb", []).append(peak)
    result = {key: statistics.median(values) for key, values in metrics.items()}
    result["chunks"] = int(CHUNKS_WRITTEN.search(out).group(1))
    return result


def print_table(rows: list[tuple[str, str, str]]) -> None:
    width = [max(len(row[i]) for row in rows) for i in range(3)]
    for number, row in enumerate(rows):
        print("  ".join(cell.ljust(width[i]) for i, cell in enumerate(row)))
        if number == 0:
            print("  ".join("-" * w for w in width))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per measurement (medians are reported)")
    parser.add_argument("--pdf-pages", type=int, default=200, help="pages of the generated PDF for ingest throughput")
    parser.add_argument("--latency-chunks", type=int, default=5000, help="chunks in the index used for query latency")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".docsrag" / "bench-cache", help="downloaded Debian doc packages")
    parser.add_argument("--packages", nargs="+", default=["python3.11-doc"], help="Debian doc packages filling the latency index")
    args = parser.parse_args()
    from tests.docfactory import make_long_pdf

    rows = [("measurement", "corpus", f"median of {args.runs}")]
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        pdf_docs = work / "pdf"
        pdf_docs.mkdir()
        make_long_pdf(pdf_docs / "long-manual.pdf", pages=args.pdf_pages)
        for label, docs in (("ORD-QA (32 .md)", ORDQA / "docs"), (f"{args.pdf_pages}-page PDF", pdf_docs)):
            raw, texts = raw_embedder_rate(docs, args.runs)
            measured = ingest_runs(docs, work, args.runs)
            rows += [
                ("raw embedder throughput", label, f"{raw:.1f} chunks/s ({texts} chunks)"),
                ("ingest throughput (python -m app ingest)", label, f"{measured['ingest_chunks_per_s']:.1f} chunks/s"),
                ("ingest peak RSS", label, f"{measured['ingest_peak_rss_mb']:.0f} MB"),
                ("unchanged re-ingest", label, f"{measured['reingest_s']:.1f} s"),
            ]
        latency = latency_runs(work, args.latency_chunks, args.runs, args.cache_dir, args.packages)
        corpus = f"ORD-QA + {' + '.join(args.packages)}, {latency['chunks']} chunks"
        for stage in ("retrieve", "rerank", "generate", "total"):
            rows.append((f"query {stage} p50 / p95", corpus, f"{latency[f'{stage}_ms_p50']:.0f} / {latency[f'{stage}_ms_p95']:.0f} ms"))
        rows += [
            ("ask wall time (process start to answer)", corpus, f"{latency['ask_wall_s']:.1f} s"),
            ("ask peak RSS", corpus, f"{latency['ask_peak_rss_mb']:.0f} MB"),
        ]
    print_table(rows)


if __name__ == "__main__":
    main()
