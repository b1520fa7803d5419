"""Issue 29's experiment: can a chunk's section path be embedded once per section instead of beside every chunk?

On copies of the public sets' indexes (built by ``bench_quality.py``, same chunks), every stored vector is rewritten
by a variant and the retrieval-only eval runs again; the text of each chunk and each distinct embedded metadata string
(section path, or file name) are embedded once and cached in ``--work-dir``:

- ``stored``: the vectors as ingested (the control: rewriting must change nothing);
- ``mixed-W``: normalise(text alone + W × metadata string), the path embedded once per distinct string;
- ``first-head-W``: a piece's first chunk keeps its ingested vector (path beside its text), later chunks as ``mixed-W``;
- ``first-chunk-W``: as ``first-head-W`` but later chunks lean on their first chunk's vector (no separate path vector).

    python benchmarks/section_vector_experiment.py --indexes .docsrag/quality --work-dir /tmp/sections --variants stored mixed-0.5
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_debian_docs import metadata_once_tokens  # noqa: E402
from integrations.adapters.local_embedding import DIMENSION  # noqa: E402
from integrations.adapters.milvus_store import MilvusStore, hit_node  # noqa: E402
from settings import load_settings  # noqa: E402


def _store(index: Path) -> MilvusStore:
    """The index's store alone (no models): rows are read and rewritten, nothing is asked."""
    return MilvusStore(load_settings("local", storage={"index_dir": str(index)}), DIMENSION)


def _rows(store: MilvusStore) -> list[dict]:
    return [row for batch in store.all_rows(["*"]) for row in batch]


def parts(index: Path, cache: Path) -> dict[str, np.ndarray]:
    """Ids, text-alone vectors, distinct metadata-string vectors and each chunk's string, stored vectors; token counts."""
    if cache.is_file():
        return dict(np.load(cache))
    from llama_index.core.schema import MetadataMode

    from integrations.adapters.local_embedding import LocalMiniLMEmbedding

    store = _store(index)
    rows = _rows(store)
    store.close()
    nodes = [hit_node(row) for row in rows]
    texts = [node.get_content(MetadataMode.NONE) for node in nodes]
    heads = [node.get_metadata_str(MetadataMode.EMBED) for node in nodes]
    distinct = sorted(set(heads))
    position = {head: i for i, head in enumerate(distinct)}
    model = LocalMiniLMEmbedding()
    out = {
        "ids": np.array([node.node_id for node in nodes]),
        "text": np.array(model.get_text_embedding_batch(texts), dtype=np.float32),
        "head": np.array(model.get_text_embedding_batch(distinct), dtype=np.float32),
        "head_of": np.array([position[head] for head in heads]),
        "stored": np.array([row["embedding"] for row in rows], dtype=np.float32),
        "tokens": np.array(
            [model.count_tokens([node.get_content(MetadataMode.EMBED) for node in nodes]), metadata_once_tokens(nodes, model.count_tokens)]
        ),
    }
    np.savez(cache, **out)
    return out


def vectors(p: dict[str, np.ndarray], variant: str) -> np.ndarray:
    name, _, weight = variant.rpartition("-")
    if variant == "stored":
        return p["stored"]
    w = float(weight)
    out = p["text"] + w * p["head"][p["head_of"]]
    if name in ("first-head", "first-chunk"):
        position = {cid: i for i, cid in enumerate(p["ids"].tolist())}
        for i, cid in enumerate(p["ids"].tolist()):
            piece, n = cid.rsplit(":", 1)
            first = position.get(f"{piece}:0")
            if n == "0":
                out[i] = p["stored"][i]
            elif name == "first-chunk" and first is not None:
                out[i] = p["text"][i] + w * p["stored"][first]
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def rewrite(index: Path, ids: list[str], vecs: np.ndarray) -> None:
    by_id = dict(zip(ids, vecs, strict=True))
    store = _store(index)
    nodes = []
    for row in _rows(store):
        node = hit_node(row)
        node.embedding = by_id[node.node_id].tolist()
        nodes.append(node)
    for start in range(0, len(nodes), 1000):
        store.add(nodes[start : start + 1000])  # upsert under the same ids: text, metadata, BM25 unchanged
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--indexes", type=Path, required=True, help="bench_quality's work dir (its indexes are copied, not opened)")
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--corpus", nargs="+", default=["ord-qa", "solana", "django"])
    parser.add_argument("--variants", nargs="+", default=["stored", "mixed-0.5", "first-head-0.5", "first-chunk-0.5"])
    args = parser.parse_args()
    for corpus in args.corpus:
        base = args.work_dir / "base" / corpus
        if not base.exists():
            shutil.copytree(args.indexes / corpus, base)
        p = parts(base, args.work_dir / f"{corpus}.npz")
        print(
            f"{corpus}: {len(p['ids'])} chunks, {len(p['head'])} metadata strings; tokens beside each chunk {p['tokens'][0]:,}, "
            f"text alone + each string once {p['tokens'][1]:,}",
            flush=True,
        )
        for variant in args.variants:
            index = args.work_dir / variant / corpus
            shutil.rmtree(index, ignore_errors=True)
            shutil.copytree(base, index)
            rewrite(index, p["ids"].tolist(), vectors(p, variant))
            bench = [
                sys.executable,
                str(REPO / "benchmarks" / "bench_quality.py"),
                "--work-dir",
                str(index.parent),
                "--retrieval-only",
                "--corpus",
                corpus,
            ]
            table = subprocess.run(bench, cwd=REPO, capture_output=True, text=True, check=True).stdout
            for line in table.splitlines():
                if line.startswith(f"| {corpus} "):
                    print(f"{variant:<16} {line}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
