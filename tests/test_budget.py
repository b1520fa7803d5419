"""Usage metering and the monthly budget over real HTTP (the loopback HF server), through the real app."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from app.answers import to_answer
from app.cli import main
from app.composition import build_query_engine, open_meter, open_runtime
from settings import load_settings
from tests.test_profiles import HF_CHAIN, QUESTION, docs

QWEN, LLAMA = "Qwen/Qwen2.5-7B-Instruct-1M", "meta-llama/Llama-3.1-8B-Instruct"


@pytest.fixture
def hf_index(hf_env, tmp_path: Path) -> Path:
    assert main(["--profile", "hf_api", "ingest", str(docs(tmp_path)), "-q"]) == 0
    return tmp_path / "index"


def _rows(settings) -> list[tuple]:
    meter = open_meter(settings)
    try:
        return meter._conn.execute("SELECT kind, model, tokens_in, tokens_out, requests, ok, estimated, cost_usd FROM usage").fetchall()
    finally:
        meter.close()


def _ask(runtime, question: str = QUESTION, streaming: bool = False):
    response = build_query_engine(runtime=runtime, streaming=streaming).query(question)
    text = "".join(response.response_gen) if streaming else None
    return to_answer(question, response, answer_text=text)


def test_every_api_call_is_metered_from_usage_fields_or_estimated_and_survives_a_restart(hf_index, hf_env, capsys) -> None:
    settings = load_settings("hf_api")
    ingest_rows = _rows(settings)
    assert ingest_rows and {r[0] for r in ingest_rows} == {"embedding"}
    assert all(r[6] == 1 and r[2] > 0 and r[7] > 0 for r in ingest_rows)  # token counts estimated, priced per call

    runtime = open_runtime(settings)
    try:
        _ask(runtime)
        hf_env.add_fault("chat", "no_usage", model=QWEN)
        _ask(runtime, streaming=True)
    finally:
        runtime.close()
    chats = [r for r in _rows(settings) if r[0] == "chat"]
    [(request)] = [r for r in hf_env.requests("chat") if not r.body.get("stream")]
    words = sum(len(str(m["content"]).split()) for m in request.body["messages"])
    assert chats[0][1] == QWEN and chats[0][2] == words and chats[0][6] == 0, "tokens from the API's usage field"
    assert chats[1][6] == 1 and chats[1][2] > 0 and chats[1][3] > 0, "estimated with the bundled tokenizer"
    assert {r[0] for r in _rows(settings)} == {"embedding", "chat", "rerank"}

    capsys.readouterr()
    assert main(["--profile", "hf_api", "usage"]) == 0  # a new process would see the same: it is all in SQLite
    out = capsys.readouterr().out
    assert QWEN in out and "sentence-transformers/all-MiniLM-L6-v2" in out and "cross-encoder/ms-marco-MiniLM-L6-v2" in out
    assert "of $25.00 cap" in out and "state: ok" in out


def test_the_cap_holds_under_eight_concurrent_questions(hf_index, hf_env, monkeypatch) -> None:
    monkeypatch.setenv("DOCSRAG_BUDGET__MONTHLY_CAP_USD", "0.01")
    monkeypatch.setenv("DOCSRAG_BUDGET__DEGRADE_FRACTION", "1.0")
    settings = load_settings("hf_api")
    already = open_meter(settings).month_spend()
    cap = already + 0.0012  # a handful of questions' worth
    monkeypatch.setenv("DOCSRAG_BUDGET__MONTHLY_CAP_USD", str(cap))
    settings = load_settings("hf_api")
    runtime = open_runtime(settings)
    answers = []
    try:
        for round_ in range(4):  # rounds of 8 concurrent questions until the cap bites
            with ThreadPoolExecutor(max_workers=8) as pool:
                answers += pool.map(lambda n, r=round_: _ask(runtime, f"{QUESTION} (round {r}, copy {n})"), range(8))
            assert runtime.meter.month_spend() <= cap + 1e-12, "never over the cap, concurrent requests included"
            if any(a.answered_by not in HF_CHAIN for a in answers):
                break
    finally:
        runtime.close()
    assert all(a.answer and (a.sources or a.weak_evidence) for a in answers), "every question got an answer"
    by_api = [a for a in answers if a.answered_by in HF_CHAIN]
    local = [a for a in answers if a.answered_by not in HF_CHAIN]
    assert by_api and local
    assert all(any("monthly API budget" in str(f) for f in a.fallbacks) for a in local)


def test_past_the_degrade_threshold_only_the_cheapest_model_and_fewer_rerank_candidates(hf_index, hf_env, monkeypatch) -> None:
    monkeypatch.setenv("DOCSRAG_BUDGET__MONTHLY_CAP_USD", "1.0")
    settings = load_settings("hf_api")
    meter = open_meter(settings)
    meter.record("chat", QWEN, "auto", tokens_in=2_800_000, tokens_out=0, latency_ms=1, ok=True)  # $0.84 of $1.00 spent
    meter.close()
    hf_env.reset()
    runtime = open_runtime(settings)
    try:
        answer = _ask(runtime)
    finally:
        runtime.close()
    assert answer.answered_by == f"hf_api:{LLAMA}"  # the cheapest in the price table
    assert any(QWEN in str(f) and "passed 80% of the cap" in str(f) for f in answer.fallbacks)
    assert [r.body["model"] for r in hf_env.requests("chat")] == [LLAMA]
    [rerank] = hf_env.requests("rerank")
    assert len(rerank.body["texts"]) <= settings.rerank.max_candidates // 2


def test_error_rate_alert_fires_once_per_crossing(hf_index, hf_env, monkeypatch, caplog) -> None:
    monkeypatch.setenv("DOCSRAG_BUDGET__ALERT_WINDOW", "10")
    settings = load_settings("hf_api")
    runtime = open_runtime(settings)
    caplog.set_level(logging.WARNING, logger="integrations.usage_meter")
    try:
        hf_env.add_fault("chat", "500")
        for _ in range(3):
            _ask(runtime)
        assert "error_rate" in runtime.meter.active_alerts()
    finally:
        runtime.close()
    alerts = [r for r in caplog.records if "API error rate" in r.getMessage()]
    assert len(alerts) == 1


def test_at_the_cap_no_api_call_is_made_and_the_answer_comes_from_local_backends_with_a_notice(hf_index, hf_env, monkeypatch) -> None:
    spent = open_meter(load_settings("hf_api")).month_spend()
    monkeypatch.setenv("DOCSRAG_BUDGET__MONTHLY_CAP_USD", str(spent))  # the cap is reached
    monkeypatch.setenv("DOCSRAG_LLM__CHAIN", '["hf_api"]')
    runtime = open_runtime(load_settings("hf_api"))
    hf_env.reset()
    try:
        answer = _ask(runtime)
    finally:
        runtime.close()
    assert hf_env.requests() == [], "no API call at the cap: not for the question's embedding, reranking or the answer"
    assert answer.answered_by == "extractive" and "[1]" in answer.answer
    assert answer.sources[0].file_name == "guide.md"  # found by BM25 alone
    assert any("keywords (BM25) only" in n and "monthly API budget" in n for n in answer.notices)
    assert all("monthly API budget" in str(f) for f in answer.fallbacks)
