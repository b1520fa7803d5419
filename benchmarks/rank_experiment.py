"""Ranking experiments offline: retrieve each corpus's candidates once, then score many orderings of them.

``dump`` runs the retriever (top 30 grown passages) over a question set on a built index, embeds each
candidate with the packaged MiniLM (first ``--passage-tokens`` word pieces) and stores, per candidate,
its fused rank, dense/BM25 scores, cosine and which reference contexts it covers. ``score`` reads the
dumps and prints hit@5 / recall@5 / MRR@10 per corpus and half for each ordering in ORDERINGS, so a
fusion is judged on every corpus from one retrieval pass.

    python benchmarks/rank_experiment.py dump eval/django/questions.jsonl --index /work/idx/django --out /tmp/django.pkl
    python benchmarks/rank_experiment.py score /tmp/ordqa.pkl /tmp/solana.pkl /tmp/django.pkl
"""

from __future__ import annotations

import argparse
import pickle
import re
import statistics
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from app.evaluation import MRR_DEPTH, covers, load_questions, split_of

#: Retriever variants: attribute overrides, and module constants of integrations.hybrid_retriever. The retired
#: question splitting ({"split_questions": False}) and distinct-sections rule ({"DISTINCT_SECTION_RESULTS": 0}) were
#: compared this way before they were retired (README "Quality").
VARIANTS: dict[str, tuple[dict, dict]] = {"base": ({}, {})}


def dump(args: argparse.Namespace) -> None:
    from app.composition import build_retriever, open_runtime
    from integrations import hybrid_retriever
    from settings import load_settings

    runtime = open_runtime(load_settings(storage={"index_dir": str(args.index)}))
    store = runtime.vector_store
    questions = [q for path in args.questions for q in load_questions(path)]
    chunk_ids: list[list[str]] = []
    original = hybrid_retriever.MilvusHybridRetriever._result

    def capture(node, ids, score, pool):  # the chunk ids of each result, in result order
        chunk_ids.append(list(ids))
        return original(node, ids, score, pool)

    hybrid_retriever.MilvusHybridRetriever._result = staticmethod(capture)
    vectors: dict[str, np.ndarray] = {}
    out: dict[str, list] = {}
    defaults = {name: getattr(hybrid_retriever, name) for _, constants in VARIANTS.values() for name in constants}
    for variant, (options, constants) in VARIANTS.items():
        retriever = build_retriever(runtime, top_k=args.candidates)
        for name, value in options.items():
            setattr(retriever, name, value)
        for name, value in {**defaults, **constants}.items():
            setattr(hybrid_retriever, name, value)
        rows = []
        for q in questions:
            chunk_ids.clear()
            started = time.perf_counter()
            nodes = retriever.retrieve(q.question)
            retrieve_ms = (time.perf_counter() - started) * 1000
            texts = [n.node.get_content() for n in nodes]
            qvec = np.asarray(runtime.embed_model.get_query_embedding(q.question))
            started = time.perf_counter()
            wanted = sorted({i for ids in chunk_ids for i in ids} - vectors.keys())
            for row in store.client.get(collection_name=store.collection_name, ids=wanted, output_fields=["embedding"]):
                vectors[row["id"]] = np.asarray(row["embedding"], dtype=np.float32)
            fetch_ms = (time.perf_counter() - started) * 1000
            cands = []
            for n, t, ids in zip(nodes, texts, chunk_ids, strict=True):
                mat = np.stack([vectors[i] for i in ids if i in vectors])
                sims = mat @ qvec
                mean = mat.mean(axis=0)
                cands.append(
                    {
                        "text": t,
                        "source": n.node.metadata.get("source"),
                        "section": n.node.metadata.get("section"),
                        "fused": n.score,
                        "dense": n.node.metadata.get("dense_score"),
                        "bm25": n.node.metadata.get("bm25_score"),
                        "cos_max": float(sims.max()),
                        "cos_first": float(sims[0]),
                        "cos_mean": float(mean @ qvec / max(np.linalg.norm(mean), 1e-9)),
                        "chunks": len(ids),
                        "covers": [covers(t, ref) for ref in q.reference_contexts],
                    }
                )
            rows.append(
                {
                    "id": q.id,
                    "question": q.question,
                    "split": split_of(q.id),
                    "refs": len(q.reference_contexts),
                    "retrieve_ms": retrieve_ms,
                    "fetch_ms": fetch_ms,
                    "qvec": qvec,
                    "answerable": q.answerable,
                    "question_dense": nodes[0].node.metadata.get(hybrid_retriever.QUESTION_DENSE_KEY) if nodes else None,
                    "missing_names": nodes[0].node.metadata.get(hybrid_retriever.MISSING_NAMES_KEY) if nodes else [],
                    "cands": cands,
                }
            )
        out[variant] = rows
        retrieve_p50 = statistics.median(r["retrieve_ms"] for r in rows)
        print(variant, "retrieve p50", retrieve_p50, "fetch p50", statistics.median(r["fetch_ms"] for r in rows))
    Path(args.out).write_bytes(pickle.dumps(out))


def metrics(rows: list[dict], order_fn, k: int = 5) -> tuple[float, float, float]:
    hits = recalls = rr = 0.0
    judged = [r for r in rows if r["refs"]]
    for row in judged:
        order = order_fn(row)
        cands = [row["cands"][i] for i in order]
        top = cands[:k]
        hits += any(any(c["covers"]) for c in top)
        recalls += sum(any(c["covers"][j] for c in top) for j in range(row["refs"])) / row["refs"]
        for rank, c in enumerate(cands[:MRR_DEPTH], start=1):
            if any(c["covers"]):
                rr += 1 / rank
                break
    n = len(judged) or 1
    return hits / n, recalls / n, rr / n


def ranks(values: list[float]) -> list[int]:
    """1-based rank of each value, highest first."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    out = [0] * len(values)
    for rank, i in enumerate(order, start=1):
        out[i] = rank
    return out


def rrf_order(row: dict, key: str, weight: float, depth: int = 20, k: int = 10) -> list[int]:
    """Today's order and the candidates' ``key`` ranking fused by RRF (``weight`` on the latter) over the first ``depth``."""
    cands = row["cands"][:depth]
    other = ranks([c[key] for c in cands])
    score = [1 / (k + i + 1) + weight / (k + other[i]) for i in range(len(cands))]
    head = sorted(range(len(cands)), key=lambda i: -score[i])
    return head + list(range(len(cands), len(row["cands"])))


IDENTIFIER = re.compile(r"[A-Za-z0-9]+(?:[_.:/][A-Za-z0-9]+)+|[a-z]+[A-Z][A-Za-z0-9]*|\b[A-Z0-9]{2,}\b")


def identifiers(question: str) -> int:
    return len(IDENTIFIER.findall(question))


def adaptive(row: dict, key: str, weight: float) -> list[int]:
    """Meaning gets ``weight`` for a question without identifiers, none for one with them."""
    return rrf_order(row, key, 0.0 if identifiers(row["question"]) else weight)


def both_found(row: dict, key: str, weight: float) -> list[int]:
    """Keep today's order when its first passage was found by both the dense and the BM25 search, else fuse."""
    top = row["cands"][0] if row["cands"] else {}
    agreed = top.get("dense") is not None and top.get("bm25") is not None
    return rrf_order(row, key, 0.0 if agreed else weight)


def no_dense(row: dict, key: str, weight: float) -> list[int]:
    """Fuse only when the dense search did not find today's first passage (BM25 alone put it first)."""
    top = row["cands"][0] if row["cands"] else {}
    return rrf_order(row, key, weight if top.get("dense") is None else 0.0)


def overlap(row: dict, key: str, weight: float, depth: int = 5) -> list[int]:
    """The meaning ranking's weight shrinks with how much its top ``depth`` already agrees with today's."""
    cands = row["cands"][:20]
    mine = set(sorted(range(len(cands)), key=lambda i: -cands[i][key])[:depth])
    shared = len(mine & set(range(min(depth, len(cands))))) / depth
    return rrf_order(row, key, weight * (1 - shared))


def by_key(row: dict, key: str) -> list[int]:
    return sorted(range(len(row["cands"])), key=lambda i: -row["cands"][i][key])


ORDERINGS = {"current": lambda row: list(range(len(row["cands"])))}
for name in ("cos_mean", "cos_max", "cos_first"):
    ORDERINGS[f"{name}-only"] = partial(by_key, key=name)
    for w in (0.5, 1.0, 2.0):
        ORDERINGS[f"rrf-{name}-w{w}"] = partial(rrf_order, key=name, weight=w)
        ORDERINGS[f"adapt-{name}-w{w}"] = partial(adaptive, key=name, weight=w)
        ORDERINGS[f"both-{name}-w{w}"] = partial(both_found, key=name, weight=w)
        ORDERINGS[f"overlap-{name}-w{w}"] = partial(overlap, key=name, weight=w)
        ORDERINGS[f"nodense-{name}-w{w}"] = partial(no_dense, key=name, weight=w)


def score(args: argparse.Namespace) -> None:
    for path in args.dumps:
        data = pickle.loads(Path(path).read_bytes())
        for variant, rows in data.items():
            if variant not in args.variants:
                continue
            for name, fn in ORDERINGS.items():
                if args.only and not re.search(args.only, name):
                    continue
                cells = []
                for half in ("dev", "test"):
                    h, r, m = metrics([row for row in rows if row["split"] == half], fn)
                    cells.append(f"{half} hit@5 {h:.3f} rec@5 {r:.3f} mrr {m:.3f}")
                print(f"{Path(path).stem:8} {variant:8} {name:14} " + " | ".join(cells))


def refusals(args: argparse.Namespace) -> None:
    """Refusal rates per corpus and half for the weak-evidence thresholds (with and without the missing-names one)."""
    rules = {"0.44 + 0.55 if names missing": (0.44, 0.55), "0.44 only": (0.44, None), "none": (None, None)}
    for path in args.dumps:
        rows = pickle.loads(Path(path).read_bytes())["base"]
        for label, (base, names) in rules.items():
            cells = []
            for half in ("dev", "test"):
                chosen = [r for r in rows if r["split"] == half]

                def refused(r: dict, base: float | None = base, names: float | None = names) -> bool:
                    best = r["question_dense"]
                    limits = [base] + ([names] if r["missing_names"] else [])
                    return best is not None and any(t is not None and best < t for t in limits)

                unans = [refused(r) for r in chosen if not r["answerable"]]
                ans = [refused(r) for r in chosen if r["answerable"]]
                shown = f"{sum(unans)}/{len(unans)}" if unans else "-"
                cells.append(f"{half} unanswerable refused {shown} answerable refused {sum(ans)}/{len(ans)}")
            print(f"{Path(path).stem:8} {label:30} " + " | ".join(cells))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("questions", type=Path, nargs="+")
    d.add_argument("--index", type=Path, required=True)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--candidates", type=int, default=30)
    d.set_defaults(func=dump)
    s = sub.add_parser("score")
    s.add_argument("dumps", nargs="+", type=Path)
    s.add_argument("--variants", nargs="+", default=["base"])
    s.add_argument("--only", help="regex over ordering names")
    s.set_defaults(func=score)
    r = sub.add_parser("refusals")
    r.add_argument("dumps", nargs="+", type=Path)
    r.set_defaults(func=refusals)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
