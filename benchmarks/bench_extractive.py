"""Replay the extractive answerer on the passages a quality run recorded: answer quality and refusals in seconds.

    python benchmarks/bench_quality.py --work-dir DIR            # writes DIR/<corpus>-<half>.jsonl
    python benchmarks/bench_extractive.py --work-dir DIR [--max-passages 3]

Every question of each recorded half is answered again from its recorded top-5 passages with the packaged embedder, and
with what the retriever finds missing from the index (the index ``DIR/<corpus>``).
A question the run refused before answering (the evidence filter: no sources) stays refused; the others are refused
when the answerer refuses. Per corpus, half and ``max_passages`` value, next to the recorded answers' numbers: the
must-mention rate (Django), the reference-answer recall (ORD-QA, Solana, Django), unanswerable and answerable refused,
word pieces embedded and CPU ms per answer (p50).
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
KEYS = ("must_mention", "reference_recall", "unanswerable_refused", "answerable_refused")


def quality(questions: list, records: list[dict], refused: list[bool]) -> dict:
    from app.evaluation import summarize

    metrics = summarize(questions, records, refused, TOP_K)
    return {key: round(metrics[key], 3) for key in KEYS if key in metrics}


def lookups(records: list[dict], questions: dict, runtime) -> dict:
    """Per question id, the question context the retriever fills (what the index lacks), as the answer step sees it."""
    from app.composition import build_retriever
    from integrations.question_context import question_context

    retriever = build_retriever(runtime, top_k=TOP_K)
    found = {}
    for record in records:
        with question_context() as context:
            retriever.retrieve(questions[record["id"]].question)
        found[record["id"]] = context
    return found


def replay(records: list[dict], questions: dict, contexts: dict, max_passages: int, embed_model) -> tuple[dict, list[dict]]:
    from integrations.extractive_answer import ExtractiveAnswerer, place, scored_text

    answerer = ExtractiveAnswerer(embed_model=embed_model, max_passages=max_passages)
    replayed, refused, pieces, cpu = [], [], [], []
    for record in records:
        question = questions[record["id"]]
        texts = [p["text"] for p in record["retrieved"][:TOP_K]]
        if not record["sources"]:  # refused before the answer step
            replayed.append(record)
            refused.append(True)
            continue
        started = time.process_time()
        choice = answerer.choose(question.question, texts, contexts[record["id"]], [place(p) for p in record["retrieved"][:TOP_K]])
        cpu.append((time.process_time() - started) * 1000)
        pieces.append(embed_model.count_tokens([scored_text(unit) for unit in answerer.candidates(texts)]))  # what was embedded
        replayed.append({**record, "answer": "" if choice.refused else choice.text})
        refused.append(choice.refused)
    metrics = quality([questions[r["id"]] for r in records], replayed, refused)
    metrics["pieces_per_answer"] = round(statistics.mean(pieces)) if pieces else 0
    metrics["cpu_ms_p50"] = round(statistics.median(cpu)) if cpu else 0
    return metrics, replayed


def main() -> int:
    from app.composition import open_runtime
    from app.evaluation import load_questions
    from settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="bench_quality.py's work directory (results files)")
    parser.add_argument("--max-passages", type=int, nargs="+", default=[3])
    parser.add_argument("--half", choices=["dev", "test"], action="append", help="only this half (repeatable)")
    parser.add_argument("--corpus", choices=list(CORPORA), action="append", help="only this corpus (repeatable)")
    parser.add_argument("--out", type=Path, help="write the replayed answers here, one <corpus>-<half>.jsonl per half")
    args = parser.parse_args()
    for corpus, (_, files) in CORPORA.items():
        if args.corpus and corpus not in args.corpus:
            continue
        questions = {q.id: q for path in files for q in load_questions(path)}
        runtime = open_runtime(load_settings("local", storage={"index_dir": str(args.work_dir / corpus)}))
        for half in args.half or ["dev", "test"]:
            path = args.work_dir / f"{corpus}-{half}.jsonl"
            if not path.exists():
                continue
            records = [r for line in path.read_text().splitlines() if line.strip() and (r := json.loads(line))["id"] in questions]
            recorded = quality([questions[r["id"]] for r in records], records, [not r["sources"] for r in records])
            print(f"{corpus:7} {half:4} {len(records)} questions, recorded: {json.dumps(recorded)}", flush=True)
            contexts = lookups(records, questions, runtime)
            for value in args.max_passages:
                metrics, replayed = replay(records, questions, contexts, value, runtime.embed_model)
                print(f"{corpus:7} {half:4} max_passages={value}: {json.dumps(metrics)}", flush=True)
                if args.out:
                    args.out.mkdir(parents=True, exist_ok=True)
                    with (args.out / f"{corpus}-{half}.jsonl").open("w") as handle:
                        handle.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in replayed)
        runtime.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
