"""Honest money: a killed call's reservation is settled and shown, doctor's calls are metered, long questions refused."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.cli import main
from tests.conftest import REPO
from tests.test_budget import _rows, hf_index  # noqa: F401 - the budget tests' index, shared
from tests.test_profiles import QUESTION


def reservations(index: Path) -> list[tuple]:
    with sqlite3.connect(index / "usage.sqlite") as conn:
        return conn.execute("SELECT * FROM reservations").fetchall()


def usage(capsys) -> str:
    capsys.readouterr()
    assert main(["--profile", "hf_api", "usage"]) == 0
    return capsys.readouterr().out


def test_an_ask_killed_mid_call_is_settled_at_its_worst_case_and_shown(hf_index, hf_env, capsys) -> None:  # noqa: F811
    from app.composition import open_meter
    from integrations.adapters.milvus_store import release_lite_store
    from settings import load_settings

    release_lite_store(load_settings("local", storage={"index_dir": str(hf_index)}))  # the fixture's in-process ingest left the index open
    hf_env.add_fault("chat", "slow", delay=60)
    asking = subprocess.Popen(
        [sys.executable, "-m", "app", "--profile", "hf_api", "ask", QUESTION], cwd=REPO, env=os.environ.copy(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (held := [r for r in reservations(hf_index) if "chat" in r]):
            assert asking.poll() is None
            time.sleep(0.1)
        assert held, "the answer call should be in flight"
        before = usage(capsys)
        assert "in flight:" in before and "reserved by 1 call(s) running now" in before
    finally:
        asking.send_signal(signal.SIGKILL)
        asking.wait()

    meter = open_meter(load_settings("hf_api"))
    spent_before = meter.month_spend()
    meter.close()
    after = usage(capsys)
    assert reservations(hf_index) == [], "no reservation outlives its process"
    [(_, _, amount, pid, kind, model)] = held
    assert pid == asking.pid and kind == "chat"
    assert "interrupted: 1 call(s) whose process stopped mid-call" in after and "in flight" not in after
    assert any(row[1] == model and row[-1] == pytest.approx(amount) and row[6] == 1 for row in _rows(load_settings("hf_api")))
    meter = open_meter(load_settings("hf_api"))
    assert meter.month_spend() == pytest.approx(spent_before + amount)
    meter.close()


def test_doctor_s_paid_calls_are_metered(hf_index, hf_env, monkeypatch, capsys) -> None:  # noqa: F811
    from settings import load_settings

    monkeypatch.setenv("HF_ENDPOINT", hf_env.url)
    before = len(_rows(load_settings("hf_api")))
    assert main(["--profile", "hf_api", "doctor"]) == 0, capsys.readouterr().out
    kinds = [row[0] for row in _rows(load_settings("hf_api"))[before:]]
    assert kinds.count("chat") == 3 and "embedding" in kinds and "rerank" in kinds, kinds


def test_an_over_long_question_is_refused_before_any_paid_call(hf_index, hf_env, capsys) -> None:  # noqa: F811
    hf_env.reset()
    question = "How do I configure the request timeout? " + "Here is my whole log file. " * 4500  # ~120 KB
    assert main(["--profile", "hf_api", "ask", question]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the question is 121,540 characters, over the 4,000") and "retrieval.max_question_chars" in err
    assert hf_env.requests() == []


def test_usage_shows_a_cap_under_a_cent_as_it_is(hf_index, hf_env, monkeypatch, capsys) -> None:  # noqa: F811
    monkeypatch.setenv("DOCSRAG_BUDGET__MONTHLY_CAP_USD", "0.0015")
    assert "of $0.0015 cap" in usage(capsys)


def test_the_length_limit_holds_for_the_chat_engine_and_the_async_twins(runtime) -> None:
    import asyncio

    from app.chat import DocsChatEngine
    from app.composition import build_query_engine
    from app.query_engine import QuestionTooLong

    question = "Why? " * 1000
    engine = build_query_engine(runtime=runtime)
    chat = DocsChatEngine.from_runtime(runtime)
    for ask in (lambda: engine.query(question), lambda: asyncio.run(engine.aquery(question)), lambda: chat.chat(question),
                lambda: asyncio.run(chat.achat(question))):  # fmt: skip
        with pytest.raises(QuestionTooLong, match=r"retrieval\.max_question_chars"):
            ask()
