"""benchmarks/rank_experiment.py on an ORD-QA slice: dump keeps production's order, score and premise read it, generate asks."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.evaluation import covers
from integrations.keyword_text import keyword_text
from tests.conftest import EVAL, REPO
from tests.test_evaluation import SLICE_DOCS, SLICE_QUESTIONS

SCRIPT = REPO / "benchmarks" / "rank_experiment.py"


def _run(*args: str) -> str:
    run = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


@pytest.mark.slow
def test_dump_score_premise_and_generate_on_an_ordqa_slice(tmp_path: Path) -> None:
    docs, index, questions = tmp_path / "docs", tmp_path / "index", tmp_path / "questions.jsonl"
    docs.mkdir()
    for name in SLICE_DOCS:
        (docs / name).write_bytes((EVAL / "ord-qa" / "docs" / name).read_bytes())
    lines = (EVAL / "ord-qa" / "questions.jsonl").read_text().splitlines()
    questions.write_text("".join(line + "\n" for line in lines if json.loads(line)["id"] in set(SLICE_QUESTIONS)))
    _run("-m", "app", "ingest", str(docs), "--index", str(index), "-q")
    results = tmp_path / "results.jsonl"
    _run("-m", "app", "eval", str(questions), "--index", str(index), "--out", str(results), "--retrieval-only", "-q")
    dump = tmp_path / "slice.pkl"
    _run(str(SCRIPT), "dump", str(questions), "--index", str(index), "--out", str(dump), "--variants", "base", "wide")

    data = pickle.loads(dump.read_bytes())
    assert set(data) == {"base", "wide"}
    rows = {row["id"]: row for row in data["base"]}
    assert sorted(rows) == sorted(SLICE_QUESTIONS)
    for record in map(json.loads, results.read_text().splitlines()):
        row = rows[record["id"]]
        # The dump's order is the one `eval` (and so the product) shows: the experiment judges orderings of the real thing.
        assert [c["text"] for c in row["cands"][:5]] == [r["text"] for r in record["retrieved"][:5]], record["id"]
        assert 5 < len(row["cands"]) <= 30 and row["question_dense"] > 0.3 and len(row["qvec"]) == 384
        for c in row["cands"]:
            assert c["chunks"] == len(c["ids"]) >= 1 and max(abs(c["cos_mean"]), abs(c["cos_max"])) <= 1.0001
            assert c["fused_sum"] >= c["fused"] > 0 and len(c["covers"]) == row["refs"] >= 1

    scored = _run(str(SCRIPT), "score", str(dump), "--variants", "base", "wide", "--only", "^current$", "--halves", "all")
    lines = scored.splitlines()
    assert len(lines) == 2 and all("current" in line for line in lines)
    hit = float(re.search(r"hit@5 ([\d.]+)", lines[0])[1])
    assert hit == pytest.approx(sum(any(any(c["covers"]) for c in row["cands"][:5]) for row in rows.values()) / len(rows))
    assert hit >= 0.9, "the slice's questions are easy ones (test_evaluation's hit@5 target)"

    chosen = _run(str(SCRIPT), "premise", str(dump), "--halves", "all")
    line = next(line for line in chosen.splitlines() if re.search(r" rrf\s+all\s+n= 15 ", line))
    table = {float(w): float(m) for w, m in re.findall(r" w([\d.]+):[\d.]+/([\d.]+)", line)}
    assert len(table) == 6 and table[float(re.search(r"chosen w=([\d.]+)", line)[1])] == max(table.values()), line

    generated = tmp_path / "generated.jsonl"
    _run(str(SCRIPT), "generate", "--index", str(index), "--out", str(generated), "--kind", "first-sentence-rare", "--limit", "20")
    made = [json.loads(line) for line in generated.read_text().splitlines()]
    assert len(made) == 20 and len({q["id"] for q in made}) == 20
    texts = [(docs / name).read_text() for name in SLICE_DOCS]
    for q in made:
        assert not set(keyword_text(q["question"]).split()) & set(keyword_text(q["section"]).split()), "no heading word is left"
        assert len(keyword_text(q["question"]).split()) >= 3 and any(covers(q["reference_contexts"][0], text) for text in texts)
