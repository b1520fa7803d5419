"""Evaluation on question sets: loading, the metrics exactly as ``eval/README.md`` defines them, and the results file.

Question files are JSONL (``id``, ``question``, optional ``reference_contexts``, ``answerable``, ``kind``,
``must_mention``, ``reference_answer``) or a LlamaIndex ``rag_dataset.json`` (ids like ``solana-001``)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STAGES = ("retrieve", "rerank", "generate", "total")
COVER_THRESHOLD = 0.5
MRR_DEPTH = 10
SPLITS = ("dev", "test", "all")
SPLIT_SALT = "split:"

_CITATION = re.compile(r"\[(\d+)\]")
# A sentence ends at . ! ? or a citation marker, unless more markers follow: "It runs. [1][2] Then ..." keeps [1][2] with "It runs."
_SENTENCE_BREAK = re.compile(r"(?<=[.!?\]])\s+(?!\[\d+\])")


@dataclass(frozen=True)
class EvalQuestion:
    id: str
    question: str
    reference_contexts: tuple[str, ...] = ()
    answerable: bool = True
    kind: str = ""
    must_mention: tuple[str, ...] = ()
    reference_answer: str = ""


def load_questions(path: Path) -> list[EvalQuestion]:
    """Questions from a JSONL file or a LlamaIndex ``rag_dataset.json``."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    if stripped.startswith("{") and '"examples"' in stripped[:200]:
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("examples"), list):
            return _rag_dataset_questions(data["examples"], _dataset_prefix(Path(path)))
    return _jsonl_questions(text, Path(path))


def _dataset_prefix(path: Path) -> str:
    stem = path.stem
    return path.resolve().parent.name if stem in {"rag_dataset", "dataset"} else stem


def _rag_dataset_questions(examples: list[dict[str, Any]], prefix: str) -> list[EvalQuestion]:
    width = max(3, len(str(len(examples))))
    return [
        EvalQuestion(
            f"{prefix}-{number:0{width}d}",
            str(example["query"]),
            _contexts(example.get("reference_contexts")),
            reference_answer=str(example.get("reference_answer") or ""),
        )
        for number, example in enumerate(examples, start=1)
    ]


def _jsonl_questions(text: str, path: Path) -> list[EvalQuestion]:
    questions = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}:{line_number}: not a JSON object ({exc.msg})") from exc
        if not isinstance(row, dict) or "id" not in row or "question" not in row:
            raise ValueError(f"{path}:{line_number}: each line needs 'id' and 'question'")
        questions.append(
            EvalQuestion(
                str(row["id"]),
                str(row["question"]),
                _contexts(row.get("reference_contexts")),
                answerable=bool(row.get("answerable", True)),
                kind=str(row.get("kind") or ""),
                must_mention=_contexts(row.get("must_mention")),
                reference_answer=str(row.get("reference_answer") or ""),
            )
        )
    if not questions:
        raise ValueError(f"{path}: no questions found")
    return questions


def _contexts(value: Any) -> tuple[str, ...]:
    if not value:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def split_of(question_id: str) -> str:
    """'dev' or 'test': a fixed, roughly even split by a hash of the id (stable when questions are added)."""
    return "dev" if hashlib.sha256(f"{SPLIT_SALT}{question_id}".encode()).digest()[0] % 2 == 0 else "test"


def select(questions: Sequence[EvalQuestion], split: str = "all", limit: int | None = None) -> list[EvalQuestion]:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}")
    chosen = [q for q in questions if split == "all" or split_of(q.id) == split]
    return chosen[:limit] if limit else chosen


@lru_cache(maxsize=65536)
def trigrams(text: str) -> frozenset[tuple[str, ...]]:
    from integrations.near_duplicates import shingles

    return shingles(text)


def covers(chunk: str, reference: str) -> bool:
    a, b = trigrams(chunk), trigrams(reference)
    if not a or not b:
        return False
    return len(a & b) / min(len(a), len(b)) >= COVER_THRESHOLD


def recall_at_k(chunks: Sequence[str], references: Sequence[str], k: int) -> float:
    if not references:
        return 0.0
    top = chunks[:k]
    return sum(any(covers(c, ref) for c in top) for ref in references) / len(references)


def hit_at_k(chunks: Sequence[str], references: Sequence[str], k: int) -> float:
    return float(any(covers(c, ref) for c in chunks[:k] for ref in references))


def reciprocal_rank(chunks: Sequence[str], references: Sequence[str], depth: int = MRR_DEPTH) -> float:
    for rank, chunk in enumerate(chunks[:depth], start=1):
        if any(covers(chunk, ref) for ref in references):
            return 1.0 / rank
    return 0.0


def citation_checks(answer: str, sources: dict[int, str]) -> tuple[int, int]:
    """(valid, total) ``[n]`` markers: valid when source n was shown and shares a trigram with the citing sentence."""
    valid = total = 0
    for sentence in filter(None, _SENTENCE_BREAK.split(answer.strip())):
        claim = trigrams(_CITATION.sub(" ", sentence))
        for match in _CITATION.finditer(sentence):
            total += 1
            text = sources.get(int(match.group(1)))
            valid += text is not None and bool(claim & trigrams(text))
    return valid, total


def p50_p95(values: Sequence[float]) -> tuple[float, float]:
    """Median and 95th percentile, interpolated between data points (numpy's default); zeros without data."""
    if not values:
        return 0.0, 0.0
    twentieths = statistics.quantiles([*values, *values] if len(values) == 1 else values, n=20, method="inclusive")
    return twentieths[9], twentieths[18]


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def summarize(questions: Sequence[EvalQuestion], records: Sequence[dict[str, Any]], refused: Sequence[bool], k: int) -> dict[str, Any]:
    """Metrics of a run; retrieval metrics only over questions that have reference contexts."""
    metrics: dict[str, Any] = {"questions": len(records)}
    by_id = {q.id: q for q in questions}
    judged = [(r["id"], refs, [c["text"] for c in r["retrieved"]]) for r in records if (refs := by_id[r["id"]].reference_contexts)]
    if judged:
        metrics["with_references"] = len(judged)
        for cut in sorted({c for c in (1, 3, 5, k) if c <= k}):
            metrics[f"recall@{cut}"] = _mean(recall_at_k(chunks, refs, cut) for _, refs, chunks in judged)
            metrics[f"hit@{cut}"] = _mean(hit_at_k(chunks, refs, cut) for _, refs, chunks in judged)
        metrics[f"mrr@{MRR_DEPTH}"] = _mean(reciprocal_rank(chunks, refs) for _, refs, chunks in judged)
        top = min(5, k)  # the questions to look at first: no reference passage among the first results
        metrics[f"missed@{top}"] = [qid for qid, refs, chunks in judged if not hit_at_k(chunks, refs, top)]
    metrics["top5_words_mean"] = _mean(sum(len(c["text"].split()) for c in r["retrieved"][:5]) for r in records)
    metrics["top5_words_max"] = max((sum(len(c["text"].split()) for c in r["retrieved"][:5]) for r in records), default=0)
    answered = [r for r in records if r["answer"]]
    if answered:
        valid = total = 0
        for record in answered:
            v, t = citation_checks(record["answer"], {s["n"]: s["text"] for s in record["sources"]})
            valid, total = valid + v, total + t
        metrics["citations"] = total
        metrics["citation_validity"] = valid / total if total else 0.0
    if refused:
        metrics["refused"] = _mean(float(r) for r in refused)
        _answer_metrics(metrics, [by_id[r["id"]] for r in records], records, refused)
    for stage in STAGES:
        metrics[f"{stage}_ms_p50"], metrics[f"{stage}_ms_p95"] = p50_p95([r["timings_ms"][stage] for r in records])
    return metrics


def mentioned(question: EvalQuestion, answer: str) -> int:
    """How many of the question's ``must_mention`` strings the answer contains (case-insensitive)."""
    answer = answer.lower()
    return sum(term.lower() in answer for term in question.must_mention)


def reference_recall(question: EvalQuestion, answer: str) -> float:
    """The share of the reference answer's BM25 terms (stemmed, stop words dropped) that the answer contains."""
    from integrations.keyword_text import keyword_text

    wanted = set(keyword_text(question.reference_answer).split())
    return len(wanted & set(keyword_text(answer).split())) / len(wanted) if wanted else 0.0


def _answer_metrics(
    metrics: dict[str, Any], questions: list[EvalQuestion], records: Sequence[dict[str, Any]], refused: Sequence[bool]
) -> None:
    """Must-mention rate and reference-answer recall over answered answerable questions; refusal rates of unanswerable
    and answerable questions."""
    runs = list(zip(questions, records, refused, strict=True))
    answered = [(q, r["answer"]) for q, r, was_refused in runs if q.answerable and r["answer"] and not was_refused]
    expected = sum(len(q.must_mention) for q, _ in answered)
    if expected:
        metrics["must_mention"] = sum(mentioned(q, answer) for q, answer in answered) / expected
    recalls = [reference_recall(q, answer) for q, answer in answered if q.reference_answer]
    if recalls:
        metrics["reference_recall"] = _mean(recalls)
    if any(not q.answerable for q in questions):
        metrics["unanswerable_refused"] = _mean(float(r) for q, _, r in runs if not q.answerable)
    if any(q.answerable for q in questions):  # also on a set without unanswerable questions: a refusal there is wrong
        metrics["answerable_refused"] = _mean(float(r) for q, _, r in runs if q.answerable)


def format_metrics(metrics: dict[str, Any]) -> str:
    """The metrics as an aligned two-column table."""
    width = max(len(name) for name in metrics)
    return "\n".join(f"{name:<{width}}  {_shown(name, value)}" for name, value in metrics.items())


def _shown(name: str, value: Any) -> str:
    if isinstance(value, list):
        return " ".join(map(str, value)) or "none"
    if not isinstance(value, float):
        return str(value)
    return f"{value:.1f}" if name.endswith(("_p50", "_p95", "_mean")) else f"{value:.3f}"


def retrieved_entry(rank: int, scored: Any) -> dict[str, Any]:
    """One retrieved chunk (a LlamaIndex NodeWithScore) in the results format."""
    from llama_index.core.schema import MetadataMode

    from integrations.near_duplicates import DUPLICATES_KEY, location

    node = scored.node
    entry = {"rank": rank, "text": node.get_content(metadata_mode=MetadataMode.NONE), **location(node.metadata), "score": scored.score}
    if node.metadata.get(DUPLICATES_KEY):
        entry[DUPLICATES_KEY] = list(node.metadata[DUPLICATES_KEY])
    return entry


def source_entry(source: Any) -> dict[str, Any]:
    """One numbered source of an :class:`app.answers.Answer` in the results format."""
    entry: dict[str, Any] = {"n": source.n, "source": source.source}
    if source.page is not None:
        entry["page"] = source.page
    if source.section:
        entry["section"] = source.section
    entry["text"] = source.text
    return entry


def result_record(
    question: EvalQuestion, retrieved: list[dict[str, Any]], answer: str, sources: list[dict[str, Any]], timings: dict[str, float]
) -> dict[str, Any]:
    return {
        "id": question.id,
        "question": question.question,
        "retrieved": retrieved,
        "answer": answer,
        "sources": sources,
        "timings_ms": {stage: round(float(timings.get(stage, 0.0)), 3) for stage in STAGES},
    }


def write_results(records: Iterable[dict[str, Any]], path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


@dataclass
class EvalRun:
    """What one run produced: the result records and, per record, whether the answer refused (weak evidence)."""

    records: list[dict[str, Any]] = field(default_factory=list)
    refused: list[bool] = field(default_factory=list)


class Evaluator:
    """Runs questions through the product's retriever and offline ranking stage (top k, for the metrics) and, unless
    retrieval-only, its query engine. A cross-encoder (HF API or local model) is not part of the retrieval metrics."""

    def __init__(self, runtime: Any, k: int = 10, retrieval_only: bool = False) -> None:
        from app.composition import build_query_engine, build_ranking_stages, build_retriever

        self.k = k
        candidates, self.stages = (k, []) if runtime.reranker is not None else build_ranking_stages(runtime, top_n=k)
        self.retriever = build_retriever(runtime, top_k=candidates)
        self.engine = None if retrieval_only else build_query_engine(runtime=runtime, log_questions=False)

    def ask(self, question: EvalQuestion) -> tuple[dict[str, Any], bool | None]:
        started = time.perf_counter()
        nodes = self.retriever.retrieve(question.question)
        for stage in self.stages:
            nodes = stage.postprocess_nodes(nodes, query_str=question.question)
        retrieve_ms = (time.perf_counter() - started) * 1000
        retrieved = [retrieved_entry(rank, scored) for rank, scored in enumerate(nodes, start=1)]
        if self.engine is None:
            return result_record(question, retrieved, "", [], {"retrieve": retrieve_ms, "total": retrieve_ms}), None
        from app.answers import to_answer

        answer = to_answer(question.question, self.engine.query(question.question))
        sources = [source_entry(s) for s in answer.sources]
        return result_record(question, retrieved, answer.answer, sources, answer.timings_ms), answer.weak_evidence


def evaluate(
    runtime: Any, questions: Sequence[EvalQuestion], k: int = 10, retrieval_only: bool = False, show_progress: bool = True
) -> EvalRun:
    """Run every question with a progress bar on stderr."""
    import sys

    from tqdm import tqdm

    evaluator, run = Evaluator(runtime, k=k, retrieval_only=retrieval_only), EvalRun()
    for question in tqdm(questions, unit="q", desc="evaluating", file=sys.stderr, disable=not show_progress):
        record, refused = evaluator.ask(question)
        run.records.append(record)
        if refused is not None:
            run.refused.append(refused)
    return run
