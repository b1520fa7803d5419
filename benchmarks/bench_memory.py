"""Peak memory of answering 20 questions: the hf_spaces profile (API models, loopback server) vs the embedded default.

Each measurement is a fresh process (``--child``) that opens the index, answers 20 ORD-QA
questions and reports its peak RSS (VmHWM, plus that of the embedded Milvus Lite server it
starts) and which heavy modules it imported. Indexes are built once beforehand (the hf_spaces
one through the loopback server's embeddings route).
Targets: hf_spaces ≤ 400 MB, embedded default ≤ 1.2 GB; hf_spaces must import no onnxruntime,
torch or llama_cpp.

Run: .venv/bin/python benchmarks/bench_memory.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
EVAL = REPO / "eval" / "ord-qa"
FAKE_TOKEN = "hf_bench_token_not_real"
HEAVY = ("onnxruntime", "torch", "llama_cpp")


def child(profile: str, questions: list[str]) -> None:
    from app.composition import build_query_engine, open_runtime
    from settings import load_settings

    runtime = open_runtime(load_settings(profile))
    engine = build_query_engine(runtime=runtime)
    answered = sum(bool(engine.query(q).response) for q in questions)
    from benchmarks.proc_tree import children_peak_mb, rss_mb

    # This process plus the embedded Milvus Lite server it started (still running: the runtime is open).
    peak = rss_mb("self", "VmHWM") + children_peak_mb()
    print(json.dumps({"peak_mb": peak, "answered": answered, "heavy": [m for m in HEAVY if m in sys.modules]}))


def run_child(profile: str, env: dict[str, str], questions: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", profile, "--questions-json", json.dumps(questions)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1800, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--questions-json")
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.questions_json))
        return

    from tests.loopback_server import LoopbackServer

    questions = [json.loads(line)["question"] for line in (EVAL / "questions.jsonl").read_text().splitlines()[:20]]
    work = Path(tempfile.mkdtemp(prefix="bench_memory_"))
    server = LoopbackServer().start()
    base = {k: v for k, v in os.environ.items() if not k.startswith("DOCSRAG_") and k not in ("SPACE_ID", "SPACE_HOST")}
    envs = {
        "hf_spaces": {**base, "HF_TOKEN": FAKE_TOKEN, "DOCSRAG_HF_BASE_URL": server.url, "HF_HOME": str(work / "hf"),
                      "DOCSRAG_STORAGE__INDEX_DIR": str(work / "spaces")},
        "local": {**base, "DOCSRAG_STORAGE__INDEX_DIR": str(work / "local")},
    }  # fmt: skip
    try:
        for profile, env in envs.items():
            subprocess.run([sys.executable, "-m", "app", "--profile", profile, "ingest", str(EVAL / "docs"), "-q"],
                           cwd=REPO, env=env, check=True, capture_output=True)  # fmt: skip
        rows = []
        for profile, env in envs.items():
            results = [run_child(profile, env, questions) for _ in range(args.runs)]
            peaks = [r["peak_mb"] for r in results]
            rows.append((profile, statistics.median(peaks), min(peaks), max(peaks), results[0]["answered"], results[0]["heavy"]))
    finally:
        server.stop()
    print(f"{'profile':<10} {'peak RSS MB (median)':>21} {'min':>7} {'max':>7} {'answered':>9}  heavy modules imported")
    for profile, median, low, high, answered, heavy in rows:
        print(f"{profile:<10} {median:>21.0f} {low:>7.0f} {high:>7.0f} {answered:>9}  {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
