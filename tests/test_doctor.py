"""`python -m app doctor` against the loopback fake: all green, then each failure mode named in its row."""

from __future__ import annotations

import pytest

from app.cli import main
from tests.test_profiles import docs


@pytest.fixture
def doctor_env(hf_env, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_ENDPOINT", hf_env.url)  # the Hub API (whoami, provider mappings) of the fake
    assert main(["--profile", "hf_api", "ingest", str(docs(tmp_path)), "-q"]) == 0
    hf_env.reset()
    return hf_env


def doctor(capsys, profile: str = "hf_api") -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--profile", profile, "doctor"])
    out = capsys.readouterr().out
    print(out)
    return code, out


def row(out: str, name: str) -> str:
    return next(line for line in out.splitlines() if line.startswith(name))


def test_all_green_against_the_fake_with_one_call_per_part(doctor_env, capsys) -> None:
    code, out = doctor(capsys)
    assert code == 0 and "FAILED" not in out and "unreachable" not in out
    for name in ("token", "chat Qwen/Qwen2.5-7B-Instruct-1M: providers", "chat google/gemma-2-2b-it: completion", "ollama llama3.2:3b",
                 "embedding (hf_api)", "rerank (hf_api)", "index"):  # fmt: skip
        assert " ok " in row(out, name), row(out, name)
    assert "re-embeds at cosine 1.0000" in row(out, "index")
    completions = doctor_env.requests("chat")
    assert completions and all(r.body["max_tokens"] == 1 for r in completions)


@pytest.mark.parametrize(
    ("breakage", "name", "result", "words"),
    [
        ("bad_token", "token", "FAILED", "HTTP 401"),
        ("model_not_served", "chat meta-llama/Llama-3.1-8B-Instruct: providers", "FAILED", "no live chat provider"),
        ("model_not_served", "chat meta-llama/Llama-3.1-8B-Instruct: completion", "FAILED", "not supported by any provider"),
        ("ollama_not_pulled", "ollama llama3.2:3b", "FAILED", "ollama pull llama3.2:3b"),
        ("embedding_413", "embedding (hf_api)", "ok", "384-d"),
        ("rerank_gone", "rerank (hf_api)", "FAILED", "fused retrieval order was kept"),
        ("ollama_down", "ollama llama3.2:3b", "unreachable", "could not connect"),
        ("other_embedder", "index", "FAILED", "built with another embedding model"),
        ("declared_dimension", "embedding (hf_api)", "FAILED", "384-d vectors, embedding.dimension says 768-d"),
    ],
)
def test_each_failure_mode_is_named_in_its_row_and_the_exit_code_says_so(
    doctor_env, capsys, monkeypatch, breakage, name, result, words
) -> None:
    state = doctor_env.state
    if breakage == "bad_token":
        state.tokens.clear()
    elif breakage == "model_not_served":
        state.chat_models.discard("meta-llama/Llama-3.1-8B-Instruct")
    elif breakage == "ollama_not_pulled":
        state.ollama_models.clear()
    elif breakage == "embedding_413":
        monkeypatch.setattr("tests.loopback_server.MAX_CLIENT_BATCH", 0)  # one text still fails: a real failure
    elif breakage == "rerank_gone":
        state.rerank_models.clear()
    elif breakage == "ollama_down":
        from tests.loopback_server import refused_url

        monkeypatch.setenv("DOCSRAG_LLM__OLLAMA_BASE_URL", refused_url())
    elif breakage == "other_embedder":
        state.token_level_models.add("sentence-transformers/all-MiniLM-L6-v2")  # the same id now answers other vectors
    elif breakage == "declared_dimension":
        monkeypatch.setenv("DOCSRAG_EMBEDDING__DIMENSION", "768")  # the embedder's declared length, not the model's
    code, out = doctor(capsys)
    if breakage == "embedding_413":
        result, words = "FAILED", "HTTP 413"
    line = row(out, name)
    assert f" {result} " in line and words in line, line
    assert code == 1 and "fix:" in line


def test_local_profile_offline_runs_the_local_checks(monkeypatch, tmp_path, capsys) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "index"))
    code, out = doctor(capsys, "local")
    assert code == 0 and " ok " in row(out, "embedding (local)") and " ok " in row(out, "index")


def test_hf_profile_offline_says_unreachable_and_still_runs_the_local_checks(doctor_env, monkeypatch, capsys) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    code, out = doctor(capsys)
    assert code == 1
    assert " unreachable " in row(out, "token") and "offline mode is on" in row(out, "token")
    assert " unreachable " in row(out, "embedding (hf_api)")
    assert " ok " in row(out, "ollama llama3.2:3b")  # not an HF call


def test_no_row_shows_the_token_when_every_reply_echoes_it(doctor_env, capsys) -> None:
    from tests.test_hf_token_redaction import assert_clean, echo_everything

    echo_everything(doctor_env)
    code, out = doctor(capsys)
    rows = [line for line in out.splitlines() if " FAILED " in line]
    assert code == 1 and len(rows) >= 5, out  # token, both checks of each chat model, embedding, rerank
    assert any("providers" in line and "HTTP 401" in line for line in rows), out
    assert_clean(out)
