"""The usage meter's own guarantees: persistence, a cap that holds under concurrency, alerts once per crossing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from integrations.usage_meter import Alert, BudgetExceeded, UsageMeter
from settings.model import BudgetSettings


def meter(path: Path, cap: float = 1.0, alerts: list[Alert] | None = None, **kwargs) -> UsageMeter:
    budget = BudgetSettings(monthly_cap_usd=cap, **kwargs)
    return UsageMeter(path, budget, on_alert=alerts.append if alerts is not None else None)


def test_spend_survives_a_restart(tmp_path: Path) -> None:
    m = meter(tmp_path / "usage.sqlite")
    cost = m.record("chat", "Qwen/Qwen2.5-7B-Instruct-1M", "hf-inference", tokens_in=1_000_000, tokens_out=0, latency_ms=800, ok=True)
    assert cost == pytest.approx(0.30)
    m.close()
    again = meter(tmp_path / "usage.sqlite")
    assert again.month_spend() == pytest.approx(0.30)
    [(_day, model, requests, tokens_in, _tokens_out, spent)] = again.by_day_and_model()
    assert (model, requests, tokens_in, spent) == ("Qwen/Qwen2.5-7B-Instruct-1M", 1, 1_000_000, pytest.approx(0.30))


def test_provider_suffix_uses_the_base_model_price_and_unknown_models_the_default(tmp_path: Path) -> None:
    m = meter(tmp_path / "u.sqlite")
    assert m.cost("google/gemma-2-2b-it:fastest", 1_000_000, 0) == pytest.approx(0.10)
    assert m.cost("someone/unknown-model", 1_000_000, 0) == pytest.approx(0.5)
    assert m.cheapest(["Qwen/Qwen2.5-7B-Instruct-1M", "meta-llama/Llama-3.1-8B-Instruct", "google/gemma-2-2b-it"]) == (
        "meta-llama/Llama-3.1-8B-Instruct"
    )


def test_concurrent_reservations_never_pass_the_cap(tmp_path: Path) -> None:
    m = meter(tmp_path / "u.sqlite", cap=1.0)
    granted: list[float] = []
    refused: list[str] = []
    barrier = threading.Barrier(8)

    def question() -> None:
        barrier.wait()
        for _ in range(10):
            try:
                r = m.reserve("Qwen/Qwen2.5-7B-Instruct-1M", tokens_in=200_000)  # $0.06 worst case each
            except BudgetExceeded as exc:
                refused.append(str(exc))
                continue
            granted.append(m.record("chat", "Qwen/Qwen2.5-7B-Instruct-1M", "x", 150_000, 0, 10, True, reservation=r))

    threads = [threading.Thread(target=question) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert m.month_spend() <= 1.0
    assert refused and "monthly API budget" in refused[0]
    assert m.state() in {"degraded", "capped"}


def test_alerts_fire_once_per_crossing(tmp_path: Path) -> None:
    fired: list[Alert] = []
    m = meter(tmp_path / "u.sqlite", cap=100.0, alerts=fired, alert_spend_usd=0.5, alert_error_rate=0.05, alert_window=10)
    for _ in range(3):
        m.observe_answer(20_000)
    assert [a.name for a in fired] == ["latency"]
    m.observe_answer(1_000)
    m.observe_answer(16_000)
    assert [a.name for a in fired] == ["latency", "latency"], "a second crossing after recovery alerts again"

    m.record("chat", "m", "p", 0, 0, 10, ok=False)
    m.record("chat", "m", "p", 0, 0, 10, ok=False)
    assert [a.name for a in fired].count("error_rate") == 1
    m.record("chat", "Qwen/Qwen2.5-7B-Instruct-1M", "p", 2_000_000, 0, 10, ok=True)
    m.record("chat", "Qwen/Qwen2.5-7B-Instruct-1M", "p", 1_000_000, 0, 10, ok=True)
    assert [a.name for a in fired].count("spend") == 1
    assert set(m.active_alerts()) == {"error_rate", "latency", "spend"}


def test_reported_usage_past_the_reservation_is_recorded_and_the_cap_sees_it(tmp_path: Path, loopback) -> None:
    """A server reporting 10M input / 1M output tokens costs $3.30 at Qwen's price, not the small reservation made before the call."""
    from llama_index.core.base.llms.types import ChatMessage

    from integrations.adapters.hf_chat_llm import HFChatLLM
    from integrations.metered_llm import MeteredLLM
    from tests.conftest_hf import FAKE_TOKEN

    m = meter(tmp_path / "u.sqlite", cap=25.0)
    loopback.add_fault("chat", "huge_usage")
    llm = MeteredLLM(HFChatLLM(model_name="Qwen/Qwen2.5-7B-Instruct-1M", token=FAKE_TOKEN, base_url=loopback.url, timeout=2.0), m)
    llm.chat([ChatMessage(role="user", content="How long is the timeout?")])
    [(_day, _model, _requests, tokens_in, tokens_out, spent)] = m.by_day_and_model()
    assert (tokens_in, tokens_out) == (10_000_000, 1_000_000) and spent == pytest.approx(3.30)
    assert m.month_spend() == pytest.approx(3.30)
    tight = meter(tmp_path / "u.sqlite", cap=3.0)
    assert tight.state() == "capped"


def test_any_chat_backend_is_metered_by_one_wrapper_streams_stopped_early_included(tmp_path: Path) -> None:
    """MockLLM sends no usage: its tokens are estimated; a stream its reader stops after one chunk is still recorded."""
    from llama_index.core.base.llms.types import ChatMessage
    from llama_index.core.llms import MockLLM

    from integrations.metered_llm import MeteredLLM

    m = meter(tmp_path / "u.sqlite", cap=25.0)
    llm = MeteredLLM(MockLLM(max_tokens=5), m, provider="test")
    question = [ChatMessage(role="user", content="How long is the timeout?")]
    assert llm.chat(question).message.content and llm.metadata == MockLLM(max_tokens=5).metadata
    stream = llm.stream_chat(question)
    assert next(stream).delta
    stream.close()
    rows = m._conn.execute("SELECT kind, model, provider, tokens_in, tokens_out, ok, estimated FROM usage").fetchall()
    assert len(rows) == 2 and {row[:3] for row in rows} == {("chat", MockLLM().metadata.model_name, "test")}
    assert all(tokens_in > 0 and ok and estimated for _, _, _, tokens_in, _, ok, estimated in rows), rows
    assert m.in_flight() == (0, 0.0), "both reservations settled"
