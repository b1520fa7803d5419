"""Ranking experiments offline: retrieve each corpus's candidates once, then score many orderings of them.

``dump`` runs production's retriever (its dense and BM25 searches as configured; the top ``--candidates`` grown
passages; ``--variants`` such as a wider pool) over a question set on a built index and stores, per candidate, its
fused score (best chunk, and summed over its chunks), dense/BM25 scores, the question's cosine over its stored chunk
vectors and which reference contexts it covers. ``score`` prints hit@5 / recall@5 / MRR@10 per corpus and half for
each ordering in ORDERINGS, so a lever is judged on every corpus from one retrieval pass. ``generate`` makes
questions from an index's own sections (see ``generated_questions``) and ``premise`` prints the meaning weight each
question set would choose: does a corpus's own generated questions pick the weight its real questions need?

    python benchmarks/rank_experiment.py dump eval/django/questions.jsonl --index /tmp/django-index --out /tmp/django.pkl
    python benchmarks/rank_experiment.py score /tmp/ordqa.pkl /tmp/solana.pkl /tmp/django.pkl
    python benchmarks/rank_experiment.py generate --index /tmp/django-index --out /tmp/gen.jsonl --kind first-sentence-rare
    python benchmarks/rank_experiment.py premise /tmp/django.pkl /tmp/gen-django.pkl
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import statistics
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from app.evaluation import MRR_DEPTH, covers, load_questions, split_of

#: Retriever variants: attribute overrides of the retriever that production's settings build. The retired question
#: splitting and distinct-sections rule were compared this way before they were retired (docs/benchmarks.md).
#: ``rocchio`` and ``rm3`` are pseudo-relevance feedback (see ``feedback``): the searches run again with the question
#: moved towards the first results.
VARIANTS: dict[str, dict] = {
    "base": {},
    "wide": {"dense_top_k": 50, "sparse_top_k": 50},
    "narrow": {"dense_top_k": 20, "sparse_top_k": 20},  # the default before issue #23
    "dense1": {"dense_weight": 1.0},
    "dense0.25": {"dense_weight": 0.25},
    "rocchio": {},
    "rm3": {},
}
#: Pseudo-relevance feedback: first results used, and expansion terms added to the BM25 query (rm3).
FEEDBACK_DOCS = 3
FEEDBACK_TERMS = 8


def feedback(retriever, kind: str) -> None:
    """Make the retriever search twice: the second time with the question moved towards its first ranking's top chunks.

    ``rocchio``: the dense query becomes q + 0.5 * mean(top chunks' vectors) (normalised). ``rm3``: the BM25 query gets
    the FEEDBACK_TERMS terms that weigh most in the top chunks (term frequency share, weighted by fused score) and are
    not in most of the candidates (a stand-in for document frequency, which Milvus' BM25 does not expose).
    """
    from integrations.hybrid_retriever import Candidates
    from integrations.keyword_text import KEYWORD_FIELD, keyword_text

    first_rank = retriever._rank
    store = retriever.store

    def rank(question: str, vector, pool):
        first = Candidates()
        ranked = first_rank(question, vector, first)[:FEEDBACK_DOCS]
        if kind == "rocchio" and vector is not None and ranked:
            centroid = np.mean([np.asarray(v, dtype=np.float32) for v in store.vectors(ranked).values()], axis=0)
            moved = np.asarray(vector, dtype=np.float32) + 0.5 * centroid
            return first_rank(question, list(moved / np.linalg.norm(moved)), pool)
        if kind == "rm3" and ranked:
            terms_of = {i: str(n.metadata.get(KEYWORD_FIELD, "")).split() for i, n in first.nodes.items()}
            spread = Counter(t for ts in terms_of.values() for t in set(ts))
            common = {t for t, n in spread.items() if n > len(terms_of) / 2}
            weight: dict[str, float] = {}
            for i in ranked:
                for t in terms_of[i]:
                    if t not in common:
                        weight[t] = weight.get(t, 0.0) + first.fused[i] / len(terms_of[i])
            asked = set(keyword_text(question).split())
            extra = [t for t in sorted(weight, key=lambda t: -weight[t]) if t not in asked][:FEEDBACK_TERMS]
            return first_rank(" ".join([question, *extra]), vector, pool)
        return first_rank(question, vector, pool)

    retriever._rank = rank


def variant_retriever(runtime, variant: str, top_k: int | None = None):
    """Production's retriever returning ``top_k`` grown passages (default: the setting), changed as ``variant`` says."""
    from app.composition import build_retriever

    settings = runtime.settings.retrieval
    retriever = build_retriever(runtime, top_k=top_k).retriever  # the hybrid retriever itself: its settings change below
    # build_retriever widens each search to top_k; production searches dense_top_k / sparse_top_k and grows the best.
    retriever.dense_top_k, retriever.sparse_top_k = settings.dense_top_k, settings.sparse_top_k
    for name, value in VARIANTS[variant].items():
        setattr(retriever, name, value)
    if variant in ("rocchio", "rm3"):
        feedback(retriever, variant)
    return retriever


def dump(args: argparse.Namespace) -> None:
    from app.composition import open_runtime
    from settings import load_settings

    runtime = open_runtime(load_settings(storage={"index_dir": str(args.index)}))
    try:
        out = {variant: _dump_variant(runtime, args, variant) for variant in args.variants}
    finally:
        runtime.close()
    Path(args.out).write_bytes(pickle.dumps(out))


def _dump_variant(runtime, args: argparse.Namespace, variant: str) -> list[dict]:
    """Each question's top ``--candidates`` grown passages as production's retriever orders them, with their features."""
    from integrations import hybrid_retriever
    from integrations.question_context import question_context

    store = runtime.store
    questions = [q for path in args.questions for q in load_questions(path)]
    captured: list[tuple[list[str], float]] = []
    original = hybrid_retriever.MilvusHybridRetriever._result

    def capture(node, ids, score, pool):  # each result's chunk ids and the summed fused score of those in the pool
        captured.append((list(ids), sum(pool.fused.get(i, 0.0) for i in ids)))
        return original(node, ids, score, pool)

    retriever = variant_retriever(runtime, variant, args.candidates)
    vectors: dict[str, np.ndarray] = {}
    rows = []
    hybrid_retriever.MilvusHybridRetriever._result = staticmethod(capture)
    try:
        for q in questions:
            captured.clear()
            started = time.perf_counter()
            with question_context() as context:
                nodes = retriever.retrieve(q.question)
            retrieve_ms = (time.perf_counter() - started) * 1000
            qvec = np.asarray(runtime.embed_model.get_query_embedding(q.question), dtype=np.float32)
            started = time.perf_counter()
            wanted = sorted({i for ids, _ in captured for i in ids} - vectors.keys())
            for i, vector in store.vectors(wanted).items():
                vectors[i] = np.asarray(vector, dtype=np.float32)
            fetch_ms = (time.perf_counter() - started) * 1000
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
                    "question_dense": context.dense_score,
                    "missing_names": list(context.missing_names),
                    "cands": [
                        _candidate(n, ids, fused_sum, vectors, qvec, q.reference_contexts)
                        for n, (ids, fused_sum) in zip(nodes, captured, strict=True)
                    ],
                }
            )
    finally:
        hybrid_retriever.MilvusHybridRetriever._result = original
    retrieve_p50, fetch_p50 = (statistics.median(r[key] for r in rows) for key in ("retrieve_ms", "fetch_ms"))
    print(f"{variant}: retrieve p50 {retrieve_p50:.0f} ms, chunk vectors fetched p50 {fetch_p50:.0f} ms")
    return rows


def timing(args: argparse.Namespace) -> None:
    """Retrieval p50 per variant (top 5, as the product asks), variants alternating question by question so load hits all alike."""
    from app.composition import open_runtime
    from settings import load_settings

    runtime = open_runtime(load_settings(storage={"index_dir": str(args.index)}))
    questions = [q.question for path in args.questions for q in load_questions(path)]
    retrievers = {variant: variant_retriever(runtime, variant) for variant in args.variants}
    times: dict[str, list[float]] = {variant: [] for variant in args.variants}
    try:
        for _ in range(args.rounds):
            for question in questions:
                for variant, retriever in retrievers.items():
                    started = time.perf_counter()
                    retriever.retrieve(question)
                    times[variant].append((time.perf_counter() - started) * 1000)
    finally:
        runtime.close()
    first = statistics.median(times[args.variants[0]])
    for variant, values in times.items():
        p50 = statistics.median(values)
        print(f"{variant:10} retrieve p50 {p50:.1f} ms ({p50 / first:.2f}x {args.variants[0]}), n={len(values)}")


def _candidate(node, ids: list[str], fused_sum: float, vectors: dict[str, np.ndarray], qvec: np.ndarray, refs) -> dict:
    text = node.node.get_content()
    mat = np.stack([vectors[i] for i in ids if i in vectors])
    sims = mat @ qvec
    mean = mat.mean(axis=0)
    return {
        "text": text,
        "source": node.node.metadata.get("source"),
        "section": node.node.metadata.get("section"),
        "page": node.node.metadata.get("page"),
        "ids": ids,
        "fused": node.score,
        "fused_sum": fused_sum,
        "dense": node.node.metadata.get("dense_score"),
        "bm25": node.node.metadata.get("bm25_score"),
        "cos_max": float(sims.max()),
        "cos_first": float(sims[0]),
        "cos_mean": float(mean @ qvec / max(np.linalg.norm(mean), 1e-9)),
        "chunks": len(ids),
        "covers": [covers(text, ref) for ref in refs],
    }


# ---------------------------------------------------------------- questions generated from the corpus itself

#: A sentence ends at . ! ? followed by white space; a line break ends a heading or a list item.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*[A-Za-z0-9]|[A-Za-z]")
#: Kinds of generated question: where it comes from and which words are taken out of it.
KINDS = ("heading", "first-sentence", "first-sentence-rare", "first-sentence-half")


def _chunks(store) -> dict[tuple[str, int], list[tuple[int, str, str, str]]]:
    """Every chunk of the index by piece: (file id, piece) -> [(chunk number, text, section path, BM25 terms)] in order."""
    from integrations.keyword_text import KEYWORD_FIELD
    from integrations.node_ids import parse_chunk_id

    pieces: dict[tuple[str, int], list[tuple[int, str, str, str]]] = {}
    fields = ["text", "section", KEYWORD_FIELD]
    for batch in store.all_rows(fields, batch=1000):
        for row in batch:
            ref = parse_chunk_id(row["id"])
            if ref is not None:
                text, section, terms = (str(row.get(name) or "") for name in fields)
                pieces.setdefault(ref[:2], []).append((ref[2], text, section, terms))
    return {key: sorted(chunks) for key, chunks in pieces.items()}


def _first_sentence(text: str, heading: str) -> str | None:
    """The first sentence of a section's body with at least 8 words: not its heading, not a code line."""
    for sentence in _SENTENCE_END.split(text):
        sentence = sentence.strip().lstrip("#*->|` ").strip()
        if sentence == heading or sentence.count("(") + sentence.count("=") + sentence.count("{") > 2:
            continue
        if len(_WORD.findall(sentence)) >= 8:
            return sentence
    return None


def generated_questions(store, kind: str, limit: int) -> list[dict]:
    """Up to ``limit`` questions made from the index's own sections, each answered by its section's first chunk.

    ``heading``: the section's own heading (a "How do I …" heading is a question already); it is indexed with
    every chunk of its section, so it is the easy case. ``first-sentence``: the first sentence of the section's
    body (a definition, an API object's summary) without the words of its heading path, which trivially match.
    ``first-sentence-rare``: the same, also without the two rarest words it shares with its section (the exact
    terms a user who knew them would not need to ask about), so the question shares few words with its answer;
    ``first-sentence-half``: without the rarer half of them.
    """
    from integrations.keyword_text import keyword_text

    pieces = _chunks(store)
    frequency: dict[str, int] = {}
    for chunks in pieces.values():
        for term in {t for *_, terms in chunks for t in terms.split()}:
            frequency[term] = frequency.get(term, 0) + 1
    out = []
    for (file, piece), chunks in pieces.items():
        # A section's question comes from its first chunk; a piece without a heading (a PDF page) gives one per chunk.
        for index, text, section, _ in chunks if not chunks[0][2] else chunks[:1]:
            heading = section.split(" > ")[-1].strip()
            if kind == "heading" and not heading:
                continue
            if kind == "heading":
                question = heading
            else:
                sentence = _first_sentence(text, heading)
                if sentence is None:
                    continue
                trivial = set(keyword_text(section).split())
                kept = [w for w in _WORD.findall(sentence) if not trivial & set(keyword_text(w).split())]
                if kind in ("first-sentence-rare", "first-sentence-half"):
                    shared = {t for w in kept for t in keyword_text(w).split()}
                    dropped = 2 if kind == "first-sentence-rare" else len(shared) // 2
                    rare = set(sorted(shared, key=lambda t: (frequency.get(t, 0), t))[:dropped])
                    kept = [w for w in kept if not rare & set(keyword_text(w).split())]
                question = " ".join(kept)
            if len(keyword_text(question).split()) < 3:
                continue
            digest = hashlib.sha256(f"{file}#{piece}:{index}".encode()).hexdigest()  # each kind samples the same sections
            out.append({"id": f"gen-{digest[:12]}", "question": question, "reference_contexts": [text], "section": section})
    out.sort(key=lambda q: q["id"])  # a fixed sample: the ids are hashes
    return out[:limit]


def generate(args: argparse.Namespace) -> None:
    import json

    from app.composition import open_runtime
    from settings import load_settings

    runtime = open_runtime(load_settings(storage={"index_dir": str(args.index)}))
    try:
        questions = generated_questions(runtime.store, args.kind, args.limit)
    finally:
        runtime.close()
    Path(args.out).write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    print(f"{len(questions)} {args.kind} questions written to {args.out}")


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


def both_found(row: dict, key: str, weight: float) -> list[int]:
    """Keep today's order when its first passage was found by both the dense and the BM25 search, else fuse (MeaningRerank)."""
    top = row["cands"][0] if row["cands"] else {}
    agreed = top.get("dense") is not None and top.get("bm25") is not None
    return rrf_order(row, key, 0.0 if agreed else weight)


def by_key(row: dict, key: str) -> list[int]:
    return sorted(range(len(row["cands"])), key=lambda i: -row["cands"][i][key])


def within_page(row: dict, key: str) -> list[int]:
    """Pages keep today's order and slots; the passages of one page fill its slots best ``key`` first.

    A page is a file, or a page of a PDF.
    """
    cands = row["cands"]
    slots: dict[tuple, list[int]] = {}
    for i, c in enumerate(cands):
        slots.setdefault((c["source"], c.get("page")), []).append(i)
    order = [0] * len(cands)
    for positions in slots.values():
        for slot, i in zip(positions, sorted(positions, key=lambda i: -cands[i][key]), strict=True):
            order[slot] = i
    return order


#: Weights of the meaning ranking that calibration chooses among (0: today's order).
WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
ORDERINGS = {"current": lambda row: list(range(len(row["cands"])))}
for name in ("cos_max", "cos_mean"):
    ORDERINGS[f"{name}-only"] = partial(by_key, key=name)
    for w in WEIGHTS[1:]:
        ORDERINGS[f"rrf-{name}-w{w}"] = partial(rrf_order, key=name, weight=w)
        ORDERINGS[f"both-{name}-w{w}"] = partial(both_found, key=name, weight=w)
ORDERINGS["section-sum"] = partial(by_key, key="fused_sum")
for w in (0.5, 1.0):
    ORDERINGS[f"rrf-fused_sum-w{w}"] = partial(rrf_order, key="fused_sum", weight=w)
for name in ("cos_max", "cos_mean", "bm25_or0"):
    ORDERINGS[f"page-{name}"] = partial(within_page, key=name)


def _load(path: Path) -> dict[str, list[dict]]:
    data = pickle.loads(Path(path).read_bytes())
    for rows in data.values():
        for row in rows:
            for c in row["cands"]:
                c["bm25_or0"] = c["bm25"] or 0.0
    return data


def score(args: argparse.Namespace) -> None:
    for path in args.dumps:
        for variant, rows in _load(path).items():
            if variant not in args.variants:
                continue
            for name, fn in ORDERINGS.items():
                if args.only and not re.search(args.only, name):
                    continue
                cells = []
                for half in args.halves:
                    h, r, m = metrics([row for row in rows if half in ("all", row["split"])], fn)
                    cells.append(f"{half} hit@5 {h:.3f} rec@5 {r:.3f} mrr {m:.3f}")
                print(f"{Path(path).stem:8} {variant:8} {name:18} " + " | ".join(cells))


def chosen_weight(rows: list[dict], family: str = "rrf", key: str = "cos_max") -> tuple[float, dict[float, tuple[float, float]]]:
    """The weight of WEIGHTS whose ordering ranks these questions best (MRR@10, then hit@5, then the smaller weight)."""
    fn = {"rrf": rrf_order, "both": both_found}[family]
    table = {}
    for w in WEIGHTS:
        h, _, m = metrics(rows, partial(fn, key=key, weight=w))
        table[w] = (h, m)
    best = max(WEIGHTS, key=lambda w: (round(table[w][1], 6), round(table[w][0], 6), -w))
    return best, table


def premise(args: argparse.Namespace) -> None:
    """Per dump and half, the meaning weight each question set would choose, with hit@5 / MRR@10 at every weight."""
    for path in args.dumps:
        rows = _load(path)["base"]
        for family in ("rrf", "both"):
            for half in args.halves:
                chosen = [row for row in rows if half in ("all", row["split"])]
                best, table = chosen_weight(chosen, family)
                cells = " ".join(f"w{w}:{h:.3f}/{m:.3f}" for w, (h, m) in table.items())
                print(f"{Path(path).stem:22} {family:4} {half:4} n={sum(1 for r in chosen if r['refs']):3} chosen w={best:<5} {cells}")


#: The levers of issue #23 item 2 and the fusion weights, as (retriever variant, ordering of its candidates).
LEVERS = {
    "wider pool (50 per search)": ("wide", "current"),
    "whole section: summed fused score": ("base", "section-sum"),
    "whole section: RRF with summed fused score, w0.5": ("base", "rrf-fused_sum-w0.5"),
    "within page: best cosine": ("base", "page-cos_max"),
    "within page: mean-vector cosine": ("base", "page-cos_mean"),
    "within page: BM25": ("base", "page-bm25_or0"),
    "PRF: Rocchio (dense)": ("rocchio", "current"),
    "PRF: RM3-style terms (BM25)": ("rm3", "current"),
    "fusion: dense weight 1.0": ("dense1", "current"),
    "fusion: dense weight 0.25": ("dense0.25", "current"),
    "meaning RRF w0.5 (every question)": ("base", "rrf-cos_max-w0.5"),
    "meaning RRF w1.0 (every question)": ("base", "rrf-cos_max-w1.0"),
    "meaning w0.5 when searches disagree": ("base", "both-cos_max-w0.5"),
    "meaning w1.0 when searches disagree": ("base", "both-cos_max-w1.0"),
    "wider pool + meaning w0.5 when searches disagree": ("wide", "both-cos_max-w0.5"),
    "wider pool + meaning w1.0 when searches disagree": ("wide", "both-cos_max-w1.0"),
    "wider pool + RRF with summed fused score, w0.5": ("wide", "rrf-fused_sum-w0.5"),
}


def _hits(rows: list[dict], fn) -> tuple[int, float]:
    """Questions with a reference passage in the top 5, and MRR@10."""
    judged = [r for r in rows if r["refs"]]
    h, _, m = metrics(judged, fn)
    return round(h * len(judged)), m


def levers(args: argparse.Namespace) -> None:
    """Each lever's hit@5 (in questions) and MRR@10 deltas per corpus and half against today's order, and the verdict.

    A lever is kept only if it loses no more than one question's hit@5 on any half of any corpus.
    """
    data = {Path(path).stem: _load(path) for path in args.dumps}
    halves = [(corpus, half) for corpus in data for half in ("dev", "test")]
    base = {}
    for corpus, half in halves:
        rows = [r for r in data[corpus]["base"] if r["split"] == half]
        base[corpus, half] = (_hits(rows, ORDERINGS["current"]), sum(1 for r in rows if r["refs"]))
    print("| lever | " + " | ".join(f"{c} {h}" for c, h in halves) + " | kept? |")
    print("| --- " * (len(halves) + 2) + "|")
    cells = [f"{hits}/{n} {mrr:.3f}" for (hits, mrr), n in (base[key] for key in halves)]
    print("| today (hit@5 questions, MRR@10) | " + " | ".join(cells) + " | |")
    for label, (variant, ordering) in LEVERS.items():
        if any(variant not in by_variant for by_variant in data.values()):
            continue
        cells, worst, gained = [], 0, 0
        for corpus, half in halves:
            rows = [r for r in data[corpus][variant] if r["split"] == half]
            hits, mrr = _hits(rows, ORDERINGS[ordering])
            (base_hits, base_mrr), _ = base[corpus, half]
            worst, gained = min(worst, hits - base_hits), gained + hits - base_hits
            cells.append(f"{hits - base_hits:+d} {mrr - base_mrr:+.3f}")
        verdict = "no: loses more than one question" if worst < -1 else "passes the rule" if gained > 0 else "no: no gain"
        print(f"| {label} | " + " | ".join(cells) + f" | {verdict} |")


def refusals(args: argparse.Namespace) -> None:
    """Refusal rates per corpus and half for the weak-evidence thresholds (with and without the missing-names one)."""
    rules = {"0.44 + 0.55 if names missing": (0.44, 0.55), "0.44 only": (0.44, None), "none": (None, None)}
    for path in args.dumps:
        rows = _load(path)["base"]
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
    d.add_argument("--variants", nargs="+", default=["base"], choices=sorted(VARIANTS))
    d.set_defaults(func=dump)
    g = sub.add_parser("generate", help="questions made from an index's own sections (see generated_questions)")
    g.add_argument("--index", type=Path, required=True)
    g.add_argument("--out", type=Path, required=True)
    g.add_argument("--kind", choices=KINDS, default="first-sentence")
    g.add_argument("--limit", type=int, default=80)
    g.set_defaults(func=generate)
    s = sub.add_parser("score")
    s.add_argument("dumps", nargs="+", type=Path)
    s.add_argument("--variants", nargs="+", default=["base"])
    s.add_argument("--only", help="regex over ordering names")
    s.add_argument("--halves", nargs="+", default=["dev", "test"], choices=["dev", "test", "all"])
    s.set_defaults(func=score)
    pr = sub.add_parser("premise", help="the meaning weight each question set would choose")
    pr.add_argument("dumps", nargs="+", type=Path)
    pr.add_argument("--halves", nargs="+", default=["dev", "test", "all"], choices=["dev", "test", "all"])
    pr.set_defaults(func=premise)
    t = sub.add_parser("timing", help="retrieval p50 per variant, alternating")
    t.add_argument("questions", type=Path, nargs="+")
    t.add_argument("--index", type=Path, required=True)
    t.add_argument("--variants", nargs="+", default=["base", "wide"], choices=sorted(VARIANTS))
    t.add_argument("--rounds", type=int, default=3)
    t.set_defaults(func=timing)
    lv = sub.add_parser("levers", help="each lever's deltas per corpus and half, as a Markdown table")
    lv.add_argument("dumps", nargs="+", type=Path)
    lv.set_defaults(func=levers)
    r = sub.add_parser("refusals")
    r.add_argument("dumps", nargs="+", type=Path)
    r.set_defaults(func=refusals)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
