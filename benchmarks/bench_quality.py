"""The quality table: ORD-QA, Solana and Django, dev and test halves, with the embedded default settings.

Builds each public corpus's index once under ``--work-dir`` (reused when it exists), runs the eval
command's evaluator over each half with answers (or ``--retrieval-only``), and prints one Markdown table:
hit@5, recall@5, MRR@10, must-mention rate, reference-answer recall, refusal rates and retrieval latency. ORD-QA's half includes
the unanswerable OpenROAD questions of ``eval/unanswerable.jsonl`` (refusal rates); Django's has its own.

    python benchmarks/bench_quality.py                  # or: make quality
    python benchmarks/bench_quality.py --retrieval-only --corpus django
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.evaluation import evaluate, load_questions, select, summarize, write_results  # noqa: E402
from settings import load_settings  # noqa: E402

EVAL = REPO / "eval"
#: corpus -> (documents folder, question files)
CORPORA = {
    "ord-qa": (EVAL / "ord-qa" / "docs", [EVAL / "ord-qa" / "questions.jsonl", EVAL / "unanswerable.jsonl"]),
    "solana": (EVAL / "solana" / "source_files", [EVAL / "solana" / "rag_dataset.json"]),
    "django": (EVAL / "django" / "docs", [EVAL / "django" / "questions.jsonl"]),
}
COLUMNS = [
    ("hit@5", "hit@5"),
    ("recall@5", "recall@5"),
    ("mrr@10", "MRR@10"),
    ("must_mention", "must-mention"),
    ("reference_recall", "reference recall"),
    ("unanswerable_refused", "unanswerable refused"),
    ("answerable_refused", "answerable refused"),
    ("retrieve_ms_p50", "retrieve p50 ms"),
    ("retrieve_ms_p95", "retrieve p95 ms"),
]


def build_index(corpus: str, docs: Path, index: Path) -> None:
    if (index / "milvus.db").exists():
        return
    print(f"building the {corpus} index in {index} ...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "app", "ingest", str(docs), "--index", str(index), "-q"], cwd=REPO, check=True)


def run_corpus(corpus: str, work_dir: Path, retrieval_only: bool) -> list[tuple[str, dict]]:
    from app.composition import open_runtime

    docs, question_files = CORPORA[corpus]
    index = work_dir / corpus
    build_index(corpus, docs, index)
    questions = [q for path in question_files for q in load_questions(path)]
    runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
    rows = []
    try:
        for half in ("dev", "test"):
            chosen = select(questions, half)
            run = evaluate(runtime, chosen, retrieval_only=retrieval_only, show_progress=False)
            write_results(run.records, work_dir / f"{corpus}-{half}.jsonl")
            rows.append((half, summarize(chosen, run.records, run.refused, 10)))
    finally:
        runtime.close()
    return rows


def cell(metrics: dict, key: str) -> str:
    value = metrics.get(key)
    if value is None:
        return "–"
    return f"{value:.0f}" if key.endswith(("_p50", "_p95")) else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=REPO / ".docsrag" / "quality", help="indexes and results files")
    parser.add_argument("--corpus", action="append", choices=list(CORPORA), help="only this corpus (repeatable)")
    parser.add_argument("--retrieval-only", action="store_true", help="skip the answer step (no must-mention or refusal rates)")
    parser.add_argument("--json", type=Path, help="also write the metrics as JSON here")
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    results = {corpus: run_corpus(corpus, args.work_dir, args.retrieval_only) for corpus in args.corpus or CORPORA}
    print("| corpus | half | questions | " + " | ".join(title for _, title in COLUMNS) + " |")
    print("|---|---|---:|" + "---:|" * len(COLUMNS))
    for corpus, rows in results.items():
        for half, metrics in rows:
            print(f"| {corpus} | {half} | {metrics['questions']} | " + " | ".join(cell(metrics, key) for key, _ in COLUMNS) + " |")
    if args.json:
        args.json.write_text(json.dumps({c: dict(rows) for c, rows in results.items()}, indent=1))


if __name__ == "__main__":
    main()
