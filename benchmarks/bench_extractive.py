"""Replay the extractive answerer on the passages a quality run recorded, for several ``max_passages`` values.

    python benchmarks/bench_quality.py --work-dir DIR            # writes DIR/<corpus>-<half>.jsonl
    python benchmarks/bench_extractive.py --work-dir DIR --max-passages 5 4 3

Each answered question's recorded top-5 passages are answered again with the packaged embedder. Per corpus and
value: Django's must-mention rate, the share of the reference answer's words found in the answer (ORD-QA, Solana),
answers identical to the first value's, word pieces embedded and CPU ms per answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_quality import CORPORA  # noqa: E402

TOP_K = 5


def reference_answers(files: list[Path]) -> dict[str, str]:
    """Question id -> reference answer, for the question files that have one."""
    from app.evaluation import load_questions

    references: dict[str, str] = {}
    for path in files:
        text = path.read_text()
        rows = json.loads(text)["examples"] if path.suffix == ".json" else [json.loads(line) for line in text.splitlines() if line.strip()]
        for question, row in zip(load_questions(path), rows, strict=True):
            if row.get("reference_answer"):
                references[question.id] = row["reference_answer"]
    return references


def replay(records: list[dict], questions: dict, references: dict[str, str], max_passages: int, embed_model) -> tuple[dict, list[str]]:
    from app.evaluation import mentioned
    from integrations.extractive_answer import ExtractiveAnswerer
    from integrations.keyword_text import keyword_text

    answerer = ExtractiveAnswerer(embed_model=embed_model, max_passages=max_passages)
    found = expected = 0
    pieces, recalls, answers, cpu = [], [], [], 0.0
    for record in records:
        question = questions[record["id"]]
        texts = [p["text"] for p in record["retrieved"][:TOP_K]]
        started = time.process_time()
        answer = answerer.answer(question.question, texts)
        cpu += time.process_time() - started
        answers.append(answer)
        pieces.append(embed_model.count_tokens([unit.sentence for unit in answerer.candidates(texts)]))  # what was embedded
        if question.must_mention:
            expected += len(question.must_mention)
            found += mentioned(question, answer)
        if record["id"] in references:
            wanted = set(keyword_text(references[record["id"]]).split())
            recalls.append(len(wanted & set(keyword_text(answer).split())) / max(len(wanted), 1))
    metrics = {
        "must_mention": round(found / expected, 3) if expected else None,
        "reference_recall": round(statistics.mean(recalls), 3) if recalls else None,
        "pieces_per_answer": round(statistics.mean(pieces)) if pieces else 0,
        "cpu_ms_per_answer": round(cpu / max(len(records), 1) * 1000),
    }
    return metrics, answers


def main() -> int:
    from app.evaluation import load_questions
    from integrations.local_embedding import LocalMiniLMEmbedding

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="bench_quality.py's work directory (results files)")
    parser.add_argument("--max-passages", type=int, nargs="+", default=[5, 4, 3])
    args = parser.parse_args()
    embed_model = LocalMiniLMEmbedding()
    embed_model.load()
    for corpus, (_, files) in CORPORA.items():
        results = sorted(args.work_dir.glob(f"{corpus}-*.jsonl"))
        if not results:
            continue
        questions = {q.id: q for path in files for q in load_questions(path)}
        references = reference_answers(files)
        records = [json.loads(line) for path in results for line in path.read_text().splitlines() if line.strip()]
        records = [r for r in records if r["sources"] and r["id"] in questions]  # answered, not refused
        first: list[str] | None = None
        for value in args.max_passages:
            metrics, answers = replay(records, questions, references, value, embed_model)
            first = first or answers
            same = sum(a == b for a, b in zip(answers, first, strict=True))
            print(f"{corpus:7} max_passages={value}: {len(records)} answers, same as first {same}, {json.dumps(metrics)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
