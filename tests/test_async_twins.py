"""Async is the sync path: the same answers, refusals, citations and metadata from aquery, asynthesize and achat,
whether the engine is ours or one a notebook user builds from the same parts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from llama_index.core.query_engine import RetrieverQueryEngine

from app.answers import to_answer
from app.chat import DocsChatEngine
from app.composition import build_query_engine, build_retriever
from integrations.citation_synthesizer import CitationSynthesizer, QuotingAnswerer
from integrations.extractive_answer import ExtractiveAnswerer
from integrations.question_context import current_question, question_context
from tests.test_answers import _ingest

ANSWERABLE = "What is the default timeout of the widget?"
UNANSWERABLE = "Which football team won the 1998 world cup?"
#: What may differ between two runs of one question: how long each stage took, and its row in the question log.
PER_RUN = {"timings_ms", "question_id"}


def _same(sync_response, async_response) -> None:
    a, b = to_answer("q", sync_response), to_answer("q", async_response)
    assert a.answer == b.answer
    assert [(s.n, s.file_name, s.section, s.snippet, s.cited) for s in a.sources] == [
        (s.n, s.file_name, s.section, s.snippet, s.cited) for s in b.sources
    ]
    strip = lambda m: {k: v for k, v in (m or {}).items() if k not in PER_RUN}  # noqa: E731
    assert strip(sync_response.metadata) == strip(async_response.metadata)


@pytest.mark.parametrize("question", [ANSWERABLE, UNANSWERABLE])
def test_aquery_answers_and_refuses_as_query_does(ingestor, runtime, tmp_path: Path, question: str) -> None:
    _ingest(ingestor, tmp_path)
    engine = build_query_engine(runtime=runtime)
    sync_response = engine.query(question)
    async_response = asyncio.run(engine.aquery(question))
    _same(sync_response, async_response)
    if question == UNANSWERABLE:
        assert async_response.metadata["weak_evidence"] and async_response.source_nodes == []
    else:
        assert "30 seconds" in async_response.response and "[1]" in async_response.response
        assert "file_name:" not in async_response.response, "no raw metadata in the answer"


@pytest.mark.parametrize("question", [ANSWERABLE, UNANSWERABLE])
def test_an_engine_built_from_the_parts_keeps_refusals_and_citations(ingestor, runtime, tmp_path: Path, question: str) -> None:
    _ingest(ingestor, tmp_path)
    ours = build_query_engine(runtime=runtime).query(question)
    synthesizer = CitationSynthesizer([QuotingAnswerer(ExtractiveAnswerer(embed_model=runtime.embed_model))])
    stock = RetrieverQueryEngine(retriever=build_retriever(runtime), response_synthesizer=synthesizer)
    for response in (stock.query(question), asyncio.run(stock.aquery(question))):
        assert response.response == ours.response
        assert response.metadata["weak_evidence"] == ours.metadata["weak_evidence"] == (question == UNANSWERABLE)
        assert [n.node.node_id for n in response.source_nodes] == [n.node.node_id for n in ours.source_nodes]


def test_achat_and_astream_chat_answer_as_chat_does(ingestor, runtime, tmp_path: Path) -> None:
    _ingest(ingestor, tmp_path)

    async def streamed(engine: DocsChatEngine, question: str) -> str:
        reply = await engine.astream_chat(question)
        return "".join([delta async for delta in reply.async_response_gen()])

    for question in (ANSWERABLE, UNANSWERABLE):
        sync_reply = DocsChatEngine.from_runtime(runtime).chat(question)
        async_reply = asyncio.run(DocsChatEngine.from_runtime(runtime).achat(question))
        assert str(async_reply) == str(sync_reply)
        assert [n.node.node_id for n in async_reply.source_nodes] == [n.node.node_id for n in sync_reply.source_nodes]
        assert asyncio.run(streamed(DocsChatEngine.from_runtime(runtime), question)) == str(sync_reply)


def test_the_question_context_exists_only_inside_a_question() -> None:
    with pytest.raises(RuntimeError, match="no question is open"):
        current_question()
    with question_context() as context:
        assert current_question() is context
    with pytest.raises(RuntimeError):
        current_question()
