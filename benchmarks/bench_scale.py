"""Scale benchmark: ingest throughput (default vs Ray engine), store reopen time, hybrid query latency and peak RSS.

The corpus is real documentation from Debian packages, fetched with
``apt-get download`` and unpacked with ``dpkg -x`` into a cache directory
(fetched once). Files are taken package by package, in sorted order, until the
index holds the target number of chunks.

Two runs:

* compare (``--compare N``): the same ~N-chunk corpus ingested into two fresh
  indexes with the real local embedder, by the default engine and by
  ``--engine ray``; reports chunks/s (Ray with and without its start-up), peak
  RSS of the whole process tree, and checks that both indexes hold the same
  chunk ids and texts.
* scale (``--stages 10000,50000,100000``): one index grown through the stages
  by the default engine (the real Ingestor: manifest, docstore, pipeline,
  Milvus writes). After each stage a fresh process reopens the store and runs
  the hybrid retriever (real query embeddings) to report reopen time and
  p50/p95. ``--synthetic-vectors`` replaces the chunk embedder by random unit
  vectors (everything else unchanged), so storage, query, reopen and RSS
  scale can be measured without an hour of embedding on 2 cores.

Examples (run niced; they use both cores)::

    nice -n 10 .venv/bin/python benchmarks/bench_scale.py --compare 2500
    nice -n 10 .venv/bin/python benchmarks/bench_scale.py --stages 10000,50000,100000 --synthetic-vectors
    nice -n 10 .venv/bin/python benchmarks/bench_scale.py --stages 100000          # real embeddings: ~1 h here
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from app.ingestion import iter_files  # noqa: E402
from benchmarks.proc_tree import TreePeak, children_peak_mb, rss_mb  # noqa: E402

logger = logging.getLogger("bench_scale")

PACKAGES = ["postgresql-doc-15", "python3.11-doc", "python-django-doc", "sqlite3-doc", "python-sqlalchemy-doc", "git-doc", "cmake-doc"]
QUERIES = [
    "create index concurrently without locking writes",
    "vacuum full requires an exclusive lock",
    "configure shared_buffers and work_mem",
    "logical replication publication subscription",
    "window function over partition by order by",
    "python asyncio gather with a timeout",
    "subprocess run capture output check",
    "dataclass field default_factory",
    "pathlib glob recursive pattern",
    "logging basicConfig format handlers",
    "django queryset select_related prefetch_related",
    "django model field choices validation",
    "django middleware order csrf",
    "sqlite pragma journal_mode wal",
    "sqlite foreign key constraints enforcement",
    "sqlite json_extract function",
    "sqlalchemy session commit rollback",
    "sqlalchemy relationship back_populates lazy loading",
    "git rebase interactive squash commits",
    "git bisect find the commit that introduced a bug",
    "cmake add_library shared static",
    "cmake find_package config mode",
    "transaction isolation level serializable",
    "unicode normalization in string comparison",
    "how to set a statement timeout",
    "regular expression named groups",
    "connection pooling and timeouts",
    "how do I enable full text search",
    "tuple unpacking in for loops",
    "default encoding of text files",
]


# ---------------------------------------------------------------- corpus


def fetch_packages(cache: Path, packages: list[str]) -> list[Path]:
    """apt-get download + dpkg -x each package into cache/extract/<package> (once); returns the extracted roots."""
    debs, extract = cache / "debs", cache / "extract"
    debs.mkdir(parents=True, exist_ok=True)
    roots = []
    for package in packages:
        root = extract / package
        if not (root / ".complete").exists():
            found = list(debs.glob(f"{package}_*.deb"))
            if not found:
                logger.info("apt-get download %s", package)
                result = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
                found = list(debs.glob(f"{package}_*.deb"))
                if result.returncode != 0 or not found:
                    raise SystemExit(
                        f"apt-get download {package} failed ({result.stderr.strip()[-300:]}). "
                        "Run `apt-get update` first, or pass --packages with packages this system's apt sources have."
                    )
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            subprocess.run(["dpkg", "-x", str(found[0]), str(root)], check=True)
            (root / ".complete").touch()
        roots.append(root)
    return roots


def candidate_files(roots: list[Path]) -> list[tuple[Path, str]]:
    """(file, corpus-relative name) for every supported file, package by package, in sorted order."""
    out = []
    for root in roots:
        for path in iter_files(root):
            if path.is_symlink():
                continue
            out.append((path, f"{root.name}/{path.relative_to(root).as_posix()}"))
    return out


def link_into(corpus: Path, files: list[tuple[Path, str]]) -> None:
    for path, name in files:
        target = corpus / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


def count_chunks_of(path: Path, source: str, chunker) -> int:
    from app.ingestion import read_file
    from app.manifest import FileRecord
    from app.readers import file_format
    from integrations.node_ids import file_id

    record = FileRecord(file_id(path.parent, path.name), source, "", "", 0, 0, file_format(path) or "", 0, 0, "pending", 0.0)
    outcome = read_file(path, record)
    if outcome.skip_reason:
        return 0
    try:
        return len(chunker(outcome.documents))
    except ValueError:
        return 0


def pick_exact(files: list[tuple[Path, str]], target: int, settings) -> tuple[list[tuple[Path, str]], int]:
    """The first files whose chunks add up to about ``target`` (parsed and chunked here, not embedded)."""
    from app.chunking import DocumentChunker

    chunker = DocumentChunker(chunk_size=settings.ingestion.chunk_size, chunk_overlap=settings.ingestion.chunk_overlap)
    picked, total = [], 0
    for path, name in files:
        if total >= target:
            break
        n = count_chunks_of(path, name, chunker)
        if n and total + n <= target * 1.02:
            picked.append((path, name))
            total += n
    return picked, total


# ---------------------------------------------------------------- stores


def make_random_embedder():
    import numpy as np
    from llama_index.core.base.embeddings.base import BaseEmbedding

    class RandomUnitEmbedding(BaseEmbedding):
        """Random unit vectors seeded by the text (for --synthetic-vectors): storage and search cost as real ones."""

        @classmethod
        def class_name(cls) -> str:
            return "RandomUnitEmbedding"

        def _vector(self, text: str) -> list[float]:
            seed = int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
            return (v / np.linalg.norm(v)).tolist()

        def _get_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return self._vector(query)

        def _get_text_embedding(self, text: str) -> list[float]:
            return self._vector(text)

    return RandomUnitEmbedding(embed_batch_size=256)


def open_ingestor(settings, synthetic: bool):
    from app.composition import build_embed_model
    from app.ingestion import Ingestor
    from integrations.adapters.milvus_store import MilvusStore

    embed = make_random_embedder() if synthetic else build_embed_model(settings)
    store = MilvusStore(settings, 384)
    return Ingestor(settings, embed, store), store


def measure_queries(index_dir: Path, rounds: int) -> dict:
    """In a fresh process: reopen the store (timed), then run the hybrid retriever over QUERIES."""
    code = f"""
import json, logging, statistics, sys, time
sys.path.insert(0, {str(REPO)!r})
logging.basicConfig(level=logging.WARNING)
for noisy in ("pymilvus", "milvus_lite"):
    logging.getLogger(noisy).setLevel(logging.ERROR)
from settings import load_settings
from app.composition import build_embed_model, Runtime, build_retriever
from integrations.adapters.milvus_store import MilvusStore
from integrations.hybrid_retriever import MilvusHybridRetriever
from llama_index.core.schema import QueryBundle
from benchmarks.proc_tree import children_peak_mb
settings = load_settings("local", storage={{"index_dir": {str(index_dir)!r}}})
t = time.perf_counter(); store = MilvusStore(settings, 384); reopen = time.perf_counter() - t
t = time.perf_counter(); chunks = store.count(); count_s = time.perf_counter() - t
embed = build_embed_model(settings)
runtime = Runtime(settings=settings, embed_model=embed, store=store, llm=None)
retriever = build_retriever(runtime).retriever  # the hybrid retriever: its searches are timed one by one
queries = {QUERIES!r}
vectors = {{q: embed.get_query_embedding(q) for q in queries}}
cpu_samples = {{}}
def timed(fn, q, name=None):
    t, c = time.perf_counter(), time.process_time(); n = len(fn(q))
    if name:
        cpu_samples.setdefault(name, []).append((time.process_time() - c) * 1000)
    return (time.perf_counter() - t) * 1000, n
hybrid = lambda q: retriever.retrieve(q)
hybrid_pre = lambda q: retriever.retrieve(QueryBundle(q, embedding=vectors[q]))
dense = lambda q: retriever._search([vectors[q]], "embedding", "IP", retriever.dense_top_k)[0]
sparse = lambda q: retriever._search([q], "sparse_embedding", "BM25", retriever.sparse_top_k)[0]
one_source = store.rows(["source"], limit=1)[0]["source"]
filtered_retriever = build_retriever(runtime, sources=[one_source])
filtered = lambda q: filtered_retriever.retrieve(QueryBundle(q, embedding=vectors[q]))
t = time.perf_counter(); hybrid(queries[0]); first = time.perf_counter() - t  # Milvus Lite builds its BM25 index on first use
for q in queries[1:5]:
    hybrid(q)
out = {{"chunks": chunks, "reopen_s": reopen, "first_query_s": first, "count_s": count_s}}
for name, fn, rounds in (
    ("hybrid", hybrid, {rounds}), ("hybrid_no_embed", hybrid_pre, {rounds}), ("dense", dense, {rounds}), ("bm25", sparse, {rounds}),
    ("hybrid_one_file_filter", filtered, 1),
):
    samples = [timed(fn, q, name)[0] for _ in range(rounds) for q in queries]
    samples.sort()
    out[name + "_p50_ms"] = statistics.median(samples)
    out[name + "_p95_ms"] = samples[int(0.95 * (len(samples) - 1))]
    out[name + "_cpu_p50_ms"] = statistics.median(cpu_samples[name])  # CPU time of this process: the latency on an idle machine
out["hits"] = min(timed(hybrid, q)[1] for q in queries)
out["query_process_rss_mb"] = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024
out["query_store_rss_mb"] = children_peak_mb()
print("RESULT " + json.dumps(out))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1800)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"query process failed ({result.returncode}):\n{result.stderr[-3000:]}")


def dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


# ---------------------------------------------------------------- runs


def run_compare(args, files, base_settings) -> dict:
    from app.composition import build_ingestor, open_runtime
    from app.ray_ingest import ray_ingest, start_ray
    from settings import load_settings

    picked, expected = pick_exact(files, args.compare, base_settings)
    corpus = args.work_dir / f"compare-corpus-{args.compare}"
    shutil.rmtree(corpus, ignore_errors=True)
    link_into(corpus, picked)
    logger.info("compare corpus: %d files, ~%d chunks", len(picked), expected)
    out: dict = {"files": len(picked), "expected_chunks": expected}
    ids: dict[str, list] = {}
    for engine in ("default", "ray"):
        index = args.work_dir / f"compare-index-{engine}"
        shutil.rmtree(index, ignore_errors=True)
        settings = load_settings("local", storage={"index_dir": str(index)})
        runtime = open_runtime(settings)
        ingestor = build_ingestor(runtime)
        with TreePeak(os.getpid(), include_root=True, key="VmRSS", interval_s=0.5) as rss:
            started = time.perf_counter()
            ray_start_s = 0.0
            if engine == "ray":
                t = time.perf_counter()
                start_ray(None)  # timed apart: a long-lived cluster pays it once
                ray_start_s = time.perf_counter() - t
            report = ray_ingest(ingestor, corpus) if engine == "ray" else ingestor.ingest(corpus)
            total_s = time.perf_counter() - started
            if engine == "ray":
                import ray

                ray.shutdown()
        ingestor.close()
        rows = runtime.store.rows(["id", "text"], limit=16384)
        ids[engine] = sorted((row["id"], row["text"]) for row in rows)
        out[engine] = {
            "chunks": report.chunks_written,
            "skipped": len(report.skipped),
            "seconds": round(total_s, 1),
            "ray_start_s": round(ray_start_s, 1),
            "chunks_per_s": round(report.chunks_written / total_s, 1),
            "chunks_per_s_without_start": round(report.chunks_written / max(total_s - ray_start_s, 1e-9), 1),
            "peak_rss_tree_mb": round(rss.peak_mb),
            "cpu_s": round(rss.cpu_s, 1),
            "chunks_per_cpu_s": round(report.chunks_written / max(rss.cpu_s, 1e-9), 2),
            "load_avg_1m_after": os.getloadavg()[0],
        }
        logger.info("%s: %s", engine, out[engine])
        runtime.close()
    out["same_chunks"] = ids["default"] == ids["ray"]
    out["speedup"] = round(out["default"]["seconds"] / out["ray"]["seconds"], 2)
    out["speedup_without_start"] = round(out["default"]["seconds"] / (out["ray"]["seconds"] - out["ray"]["ray_start_s"]), 2)
    return out


def run_stages(args, files, base_settings) -> list[dict]:
    from app.ingestion import IngestReport
    from settings import load_settings

    index = args.work_dir / ("stages-index-synthetic" if args.synthetic_vectors else "stages-index")
    corpus = args.work_dir / "stages-corpus"
    if not args.keep:
        shutil.rmtree(index, ignore_errors=True)
        shutil.rmtree(corpus, ignore_errors=True)
    corpus.mkdir(parents=True, exist_ok=True)
    settings = load_settings("local", storage={"index_dir": str(index), "lite_max_chunks": 0})
    results = []
    next_file = 0
    ingest_s_total = 0.0
    chunks_total = 0
    bytes_per_chunk = 700.0
    for target in args.stages:
        ingestor, store = open_ingestor(settings, args.synthetic_vectors)
        stage_started = time.perf_counter()
        stage_ingest_s = 0.0
        stage_chunks = 0
        have = store.count()
        while have < target * 0.99 and next_file < len(files):
            budget = (target - have) * bytes_per_chunk * (0.5 if target - have > 2000 else 0.9)
            batch, size = [], 0
            while next_file < len(files) and (not batch or size < budget):
                batch.append(files[next_file])
                size += files[next_file][0].stat().st_size
                next_file += 1
            link_into(corpus, batch)
            t = time.perf_counter()
            report: IngestReport = ingestor.ingest(corpus)
            stage_ingest_s += time.perf_counter() - t
            stage_chunks += report.chunks_written
            now = store.count()
            if now > have:
                bytes_per_chunk = 0.5 * bytes_per_chunk + 0.5 * size / (now - have)
            have = now
            logger.info(
                "stage %d: %d chunks (%d files, %.0fs, RSS %.0f MB)", target, have, next_file, time.perf_counter() - stage_started, rss_mb()
            )
        ingestor.close()
        store_peak = children_peak_mb()
        store.close()
        ingest_s_total += stage_ingest_s
        chunks_total += stage_chunks
        row = {
            "target": target,
            "load_avg_1m": os.getloadavg()[0],
            "ingest_chunks_per_s": round(stage_chunks / max(stage_ingest_s, 1e-9), 1),
            "ingest_s": round(stage_ingest_s, 1),
            "ingest_peak_rss_mb": round(rss_mb("self", "VmHWM")),
            "ingest_store_peak_rss_mb": round(store_peak),
            "index_mb": round(dir_mb(index), 1),
        }
        row.update({k: round(v, 2) if isinstance(v, float) else v for k, v in measure_queries(index, args.rounds).items()})
        logger.info("stage result: %s", row)
        results.append(row)
        if next_file >= len(files) and have < target * 0.99:
            logger.warning("ran out of files at %d chunks: add packages with --packages", have)
            break
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".docsrag" / "bench-cache", help="downloaded and unpacked packages")
    parser.add_argument("--work-dir", type=Path, default=REPO / ".docsrag" / "bench-work", help="corpora and indexes built here")
    parser.add_argument("--packages", nargs="+", default=PACKAGES, help="Debian documentation packages, in the order files are taken")
    parser.add_argument("--compare", type=int, metavar="N", help="default vs ray engine with real embeddings on ~N chunks")
    parser.add_argument("--stages", type=lambda s: [int(x) for x in s.split(",")], help="chunk counts to grow one index through")
    parser.add_argument("--target", type=int, help="shorthand for --stages 10000,50000,TARGET (e.g. --target 100000)")
    parser.add_argument("--synthetic-vectors", action="store_true", help="random unit vectors instead of the embedder (stages only)")
    parser.add_argument("--rounds", type=int, default=3, help="times each query runs per stage (default 3)")
    parser.add_argument("--keep", action="store_true", help="grow the existing stages index instead of starting fresh")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--measure", type=Path, metavar="INDEX_DIR", help="only reopen an existing index and time queries")
    args = parser.parse_args()
    if args.target and not args.stages:
        args.stages = sorted({s for s in (10_000, 50_000, args.target) if s <= args.target})
    if args.measure:
        print(json.dumps(measure_queries(args.measure.resolve(), args.rounds), indent=2))
        return 0
    if not args.compare and not args.stages:
        parser.error("give --compare N and/or --stages/--target (or --measure INDEX_DIR)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for noisy in ("pymilvus", "milvus_lite", "httpx", "faiss", "app.ingestion"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    from settings import load_settings

    args.work_dir.mkdir(parents=True, exist_ok=True)
    files = candidate_files(fetch_packages(args.cache_dir, args.packages))
    logger.info("%d candidate files from %s", len(files), ", ".join(args.packages))
    base_settings = load_settings("local")
    results: dict = {
        "machine": {"cpus": os.cpu_count()},
        "packages": args.packages,
        "chunk_size": base_settings.ingestion.chunk_size,
        "chunk_overlap": base_settings.ingestion.chunk_overlap,
    }
    if args.compare:
        results["compare"] = run_compare(args, files, base_settings)
    if args.stages:
        results["stages"] = run_stages(args, files, base_settings)
        results["synthetic_vectors"] = args.synthetic_vectors
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)
    if "stages" in results:
        print(
            "\n| chunks | ingest chunks/s | ingest peak RSS MB (python + store) | index MB | reopen s | first query s | hybrid p50/p95 ms "
            "| hybrid CPU p50 ms | dense p50 | bm25 p50 | filtered p50 | query RSS MB (python + store) |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in results["stages"]:
            print(
                f"| {r['chunks']} | {r['ingest_chunks_per_s']} | {r['ingest_peak_rss_mb']} + {r['ingest_store_peak_rss_mb']} "
                f"| {r['index_mb']} | {r['reopen_s']} "
                f"| {r['first_query_s']} | {r['hybrid_p50_ms']:.0f}/{r['hybrid_p95_ms']:.0f} | {r['hybrid_cpu_p50_ms']:.0f} "
                f"| {r['dense_p50_ms']:.0f} | {r['bm25_p50_ms']:.0f} | {r['hybrid_one_file_filter_p50_ms']:.0f} "
                f"| {r['query_process_rss_mb']:.0f} + {r['query_store_rss_mb']:.0f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
