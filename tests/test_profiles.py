"""The hf_api and ollama profiles end to end against the loopback server: start-up checks, composition, CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from app.answers import to_answer
from app.cli import main
from app.composition import build_embed_model, build_llm, build_query_engine, build_reranker, open_runtime
from settings import load_settings
from tests.conftest_hf import FAKE_TOKEN
from tests.test_answers import CACHE
from tests.test_ingestion import GUIDE, write

HF_CHAIN = ["hf_api:Qwen/Qwen2.5-7B-Instruct-1M", "hf_api:meta-llama/Llama-3.1-8B-Instruct", "hf_api:google/gemma-2-2b-it"]
QUESTION = "How do I install the widget?"


def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    write(folder / "guide.md", GUIDE)
    write(folder / "cache.md", CACHE)
    for i in range(6):  # more chunks than rerank.top_n, so the reranker is called
        write(folder / f"topic{i}.md", f"# Topic {i}\n\nThe colour of item {i} is listed in table {i}.\n")
    return folder


def test_hf_api_profile_without_a_token_fails_at_start_up_naming_hf_token(capsys, tmp_path) -> None:
    settings = load_settings("hf_api", storage={"index_dir": str(tmp_path / "index")})
    with pytest.raises(ValueError, match="HF_TOKEN"):
        open_runtime(settings)
    assert main(["--profile", "hf_api", "ask", QUESTION]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()  # failed before opening anything


def test_huggingface_api_token_is_accepted_too(monkeypatch) -> None:
    monkeypatch.setenv("HUGGINGFACE_API_TOKEN", FAKE_TOKEN)
    assert build_reranker(load_settings("hf_api")) is not None


def test_profiles_compose_the_documented_chains_without_network(hf_env) -> None:
    settings = load_settings("hf_api")
    embed = build_embed_model(settings)
    llm = build_llm(settings)
    assert embed.class_name() == "HFEmbedding" and embed.base_url == hf_env.url
    assert embed.cache_path == str(settings.storage.index_dir / "hf_embedding_cache.sqlite")
    assert llm.labels == [*HF_CHAIN, "ollama:llama3.2:3b"]
    assert build_reranker(settings).class_name() == "HFCrossEncoderRerank"
    ollama = load_settings("ollama")
    local_embed = build_embed_model(ollama)
    assert local_embed.class_name() == "LocalMiniLMEmbedding"
    assert build_llm(ollama).labels == ["ollama:llama3.2:3b"]
    assert build_reranker(ollama) is None
    assert hf_env.requests() == []  # nothing is called at construction (no /info or /api/show probes)


def test_local_chain_member_with_a_missing_model_file_fails_naming_the_setting(monkeypatch) -> None:
    monkeypatch.setenv("DOCSRAG_LLM__CHAIN", '["local"]')
    monkeypatch.setenv("DOCSRAG_LLM__GGUF_PATH", "/nonexistent/model.gguf")
    settings = load_settings()
    with pytest.raises(ValueError, match=r"gguf_path|llama-cpp-python"):
        build_llm(settings)


def test_cli_ask_with_hf_api_prints_a_cited_answer_and_the_fallback_order(hf_env, tmp_path, capsys) -> None:
    assert main(["--profile", "hf_api", "ingest", str(docs(tmp_path)), "-q"]) == 0
    embed_requests = hf_env.requests("embed")
    chunks = sum(len(r.body["inputs"]) for r in embed_requests)
    assert len(embed_requests) == math.ceil(chunks / 32)  # one request per batch of 32

    capsys.readouterr()
    assert main(["--profile", "hf_api", "ask", QUESTION]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "[1]" in out and "Sources:\n  [1] guide.md" in out and f"Answered by: {HF_CHAIN[0]}" in out
    asked = [r for r in hf_env.requests("chat") if QUESTION in str(r.body)]
    assert asked and asked[0].body["model"] == "Qwen/Qwen2.5-7B-Instruct-1M"
    [rerank] = hf_env.requests("rerank")  # one batched scoring request per question
    assert rerank.body["query"] == QUESTION

    hf_env.add_fault("chat", "503", model="Qwen/Qwen2.5-7B-Instruct-1M", estimated_time=20)
    hf_env.add_fault("chat", "429", model="meta-llama/Llama-3.1-8B-Instruct", retry_after=30)
    assert main(["--profile", "hf_api", "ask", QUESTION]) == 0
    out = capsys.readouterr().out
    print(out)
    assert f"Answered by: {HF_CHAIN[2]}" in out
    first = out.index(f"skipped: {HF_CHAIN[0]}: HTTP 503 model loading (estimated 20 s)")
    assert first < out.index(f"skipped: {HF_CHAIN[1]}: HTTP 429 rate limited (Retry-After 30 s)")
    assert FAKE_TOKEN not in out


def test_a_reranker_failure_is_reported_and_the_fused_order_answers(hf_env, tmp_path, monkeypatch) -> None:
    # An index built offline is queryable through the API only with the real model (vectors match at cosine 0.9996,
    # GUIDE §2); the fake's embedder is deliberately another function, so this index is built through the API too.
    assert main(["--profile", "hf_api", "ingest", str(docs(tmp_path)), "-q"]) == 0
    hf_env.reset()

    hf_env.add_fault("rerank", "500")
    runtime = open_runtime(load_settings("hf_api"))
    try:
        engine = build_query_engine(runtime=runtime, streaming=True)
        response = engine.query(QUESTION)
        text = "".join(response.response_gen)
        answer = to_answer(QUESTION, response, answer_text=text)
    finally:
        runtime.close()
    assert answer.answered_by == HF_CHAIN[0] and "[1]" in text
    assert answer.sources[0].file_name == "guide.md"
    assert any("fused retrieval order was kept" in n for n in answer.notices)
    assert len(hf_env.requests("rerank")) == 1 and len(hf_env.requests("embed")) == 1


def test_a_follow_up_is_rewritten_by_the_llm_from_the_history_without_its_bookkeeping(hf_env, tmp_path) -> None:
    from app.chat import DocsChatEngine
    from app.composition import build_ingestor

    runtime = open_runtime(load_settings("hf_api"))
    try:
        ingestor = build_ingestor(runtime)
        ingestor.ingest(docs(tmp_path))
        ingestor.close()
        chat = DocsChatEngine.from_runtime(runtime)
        chat.chat(QUESTION)
        reply = chat.chat("and how large can its cache grow?")
    finally:
        runtime.close()
    standalone = reply.sources[0].raw_input["query"]
    assert standalone == f"and how large can its cache grow? (after: {QUESTION})"  # the loopback model's rewrite
    [condense] = [r for r in hf_env.requests("chat") if "<Follow Up Message>" in r.raw_body]
    assert f"user: {QUESTION}" in condense.body["messages"][0]["content"]
    assert "standalone_question" not in condense.raw_body  # the history's bookkeeping field is not sent to the model
    assert "cache.md" in {n.node.metadata["source"] for n in reply.sources[0].raw_output.source_nodes}


def test_a_cut_answer_is_marked_in_the_cli(hf_env, tmp_path, capsys, monkeypatch) -> None:
    assert main(["--profile", "hf_api", "ingest", str(docs(tmp_path)), "-q"]) == 0
    monkeypatch.setenv("DOCSRAG_LLM__MAX_TOKENS", "16")
    capsys.readouterr()
    assert main(["--profile", "hf_api", "ask", QUESTION]) == 0
    out = capsys.readouterr().out
    assert "cut at the answer-length limit" in out and HF_CHAIN[0] in out
