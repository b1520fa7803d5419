"""Follow-up questions without a working LLM: the retrieval decides whether the conversation's terms join the search.

Real index (three small Markdown guides), real embedder, real Milvus Lite.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from app.chat import STANDALONE_KEY, DocsChatEngine, condensed_reading
from app.composition import build_ingestor, open_runtime
from integrations.adapters.hf_chat_llm import HFChatLLM
from integrations.fallback_llm import FallbackLLM
from settings import load_settings
from tests import docfactory
from tests.conftest_hf import FAKE_TOKEN
from tests.test_browser import RELAY
from tests.test_ingestion import GUIDE, write
from tests.test_streamlit_app import CACHE, PROXY

PROXY_QUESTION = "How does the proxy server handle idle connections?"


def history(question: str) -> list[ChatMessage]:
    return [
        ChatMessage(role=MessageRole.USER, content=question, additional_kwargs={STANDALONE_KEY: question}),
        ChatMessage(role=MessageRole.ASSISTANT, content="An answer [1]."),
    ]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    root = tmp_path_factory.mktemp("chat")
    for name, text in {
        "widget.md": GUIDE,
        "proxy.md": PROXY,
        "cache.md": CACHE,
        "relay.md": RELAY.format(url="http://127.0.0.1:9"),
    }.items():
        write(root / "docs" / name, text)
    docfactory.make_manual_pdf(root / "docs" / "manual.pdf")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DOCSRAG_PROFILE", raising=False)
        rt = open_runtime(load_settings("local", storage={"index_dir": str(root / "index")}))
    ingestor = build_ingestor(rt)
    ingestor.ingest(root / "docs")
    ingestor.close()
    yield rt
    rt.close()


def searched(runtime, previous: str, question: str, llm=None) -> str:
    engine = DocsChatEngine.from_runtime(runtime)
    engine._llm = llm
    return engine._condense_question(history(previous), question)


def test_the_condensed_reading_carries_the_previous_questions_key_terms() -> None:
    assert condensed_reading(history("How do I configure the widget daemon?"), "and what about its timeout?") == (
        "and what about its timeout? (configure widget daemon)"
    )
    assert condensed_reading([], "and what about its timeout?") is None


def test_a_new_question_that_says_it_is_searched_as_asked(runtime) -> None:
    # "it" and four key terms made this a follow-up for the old word lists: the proxy's terms leaked into the search.
    question = "Where does the widget cache live and how do I clear it?"
    assert searched(runtime, PROXY_QUESTION, question) == question
    assert searched(runtime, PROXY_QUESTION, "How large can the cache grow?") == "How large can the cache grow?"
    # "start" is in the relay's passage too, but the relay's terms make the search less sure, not more.
    assert searched(runtime, "What does the relay status badge show?", "How do I start the widget daemon?") == (
        "How do I start the widget daemon?"
    )


def test_a_follow_up_whose_best_passage_the_question_itself_finds_is_condensed(runtime) -> None:
    # Alone, "its default timeout" finds the widget's timeout first; the proxy's idle timeout is among its own hits.
    assert searched(runtime, PROXY_QUESTION, "and what is its default timeout?") == (
        "and what is its default timeout? (proxy server handle idle connections)"
    )


def test_a_question_with_no_evidence_of_its_own_takes_the_conversations_terms(runtime) -> None:
    # "how large can it grow?" alone is refused by the evidence filter; with the cache's terms it is answerable.
    assert searched(runtime, "Where does the widget cache live?", "and how large can it grow?") == (
        "and how large can it grow? (widget cache live)"
    )


def test_the_same_best_passage_either_way_means_the_question_is_searched_as_asked(runtime) -> None:
    # Nothing to show as "Searched for": the widget's own terms add nothing the question did not already find.
    assert searched(runtime, "How do I configure the widget daemon?", "and what about its timeout?") == "and what about its timeout?"


def test_a_chain_whose_every_member_fails_decides_from_the_retrieval(runtime, refused) -> None:
    chain = FallbackLLM(members=[HFChatLLM(model_name="org/down", token=FAKE_TOKEN, base_url=refused, timeout=0.5)])
    assert searched(runtime, PROXY_QUESTION, "and what is its default timeout?", llm=chain) == (
        "and what is its default timeout? (proxy server handle idle connections)"
    )
    assert searched(runtime, PROXY_QUESTION, "How large can the cache grow?", llm=chain) == "How large can the cache grow?"


def test_the_first_question_is_used_as_it_is(runtime) -> None:
    engine = DocsChatEngine.from_runtime(runtime)
    assert engine._condense_question([], "and what about its timeout?") == "and what about its timeout?"


def test_chat_and_stream_chat_take_their_own_engines(runtime) -> None:
    from llama_index.core.base.response.schema import Response, StreamingResponse

    from app.chat import query_response

    engine = DocsChatEngine.from_runtime(runtime)
    streamed = engine.stream_chat(PROXY_QUESTION)
    assert isinstance(query_response(streamed), StreamingResponse) and "".join(streamed.response_gen)
    assert type(query_response(engine.chat(PROXY_QUESTION))) is Response
    assert engine._query_engine._response_synthesizer._streaming is False, "nothing is flipped on the shared engine"


@pytest.mark.parametrize("streaming", [False, True])
def test_timings_add_up_streamed_or_not(runtime, streaming: bool) -> None:
    from app.chat import query_response

    engine = DocsChatEngine.from_runtime(runtime, chat_history=history(PROXY_QUESTION))
    reply = engine.stream_chat("and what is its default timeout?") if streaming else engine.chat("and what is its default timeout?")
    if streaming:
        text = "".join(reply.response_gen)
        assert "90 seconds" in text
    timings = query_response(reply).metadata["timings_ms"]
    stages = timings["condense"] + timings["retrieve"] + timings["rerank"] + timings["generate"]
    assert timings["condense"] > 0 and abs(timings["total"] - stages) < 5, timings
    if streaming:  # the answer step lasts until the last token: the stream is not over when synthesize returns
        assert timings["retrieve"] < timings["first_token"] <= timings["total"], timings
    else:
        assert "first_token" not in timings
