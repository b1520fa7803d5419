"""The chat: turns kept in the session, asked through DocsChatEngine, streamed when asked to.

A turn is stored before it is answered, so a failing backend never loses the question: the page offers to ask again."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import streamlit as st
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from app.answers import Answer, to_answer
from app.chat import STANDALONE_KEY, DocsChatEngine, query_response
from app.composition import Runtime
from app.question_log import QuestionLog
from app.ui.feedback import render_feedback
from app.ui.links import SourceLinks
from app.ui.render import answer_markdown, render_answer
from app.ui.safe_markdown import escape
from integrations.citation_prompt import clean_citations

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 600
RETRY_KEY = "retry_question"
AS_ASKED_KEY = "search_as_asked"  # the question to search without the conversation's terms, once
FILTER_KEY = "source_filter"  # the sidebar's "Search only in" multiselect
CURSOR = "▌"


@dataclass
class Turn:
    question: str
    answer: Answer | None = None
    searched_for: str | None = None
    error: str | None = None
    partial: str = ""
    sources: list[str] | None = None  # the document filter the question was asked with
    question_id: int | None = None  # in the question log, for the reader's 👍/👎


def chat_history(turns: list[Turn]) -> list[ChatMessage]:
    """The turns as LlamaIndex chat messages, each question with its standalone form."""
    messages = []
    for turn in turns:
        standalone = turn.searched_for or turn.question
        messages.append(ChatMessage(role=MessageRole.USER, content=turn.question, additional_kwargs={STANDALONE_KEY: standalone}))
        if turn.answer is not None:
            messages.append(ChatMessage(role=MessageRole.ASSISTANT, content=turn.answer.answer))
    return messages


def readable_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"


def _ask_again(question: str) -> None:
    st.session_state[RETRY_KEY] = question


def _search_everything(question: str) -> None:
    st.session_state[FILTER_KEY] = []
    st.session_state[RETRY_KEY] = question


def _search_as_asked(question: str) -> None:
    """Undo a follow-up reading: the last turn is asked again, searched as the user wrote it."""
    turns = st.session_state.get("turns", [])
    if turns and turns[-1].question == question:
        turns.pop()
    st.session_state[AS_ASKED_KEY] = question
    st.session_state[RETRY_KEY] = question


def render_searched_for(turn: Turn, retry_key: str | None) -> None:
    """What was searched when the conversation changed the question, with a button to search it as asked."""
    if not turn.searched_for or turn.searched_for == turn.question:
        return
    st.caption(f"Searched for: {escape(turn.searched_for)}")
    if retry_key:
        st.button("Search my question as asked", icon="↩️", key=f"as-asked-{retry_key}", on_click=_search_as_asked, args=(turn.question,))


def render_filter_refusal(turn: Turn, retry_key: str | None) -> None:
    """A refusal under a document filter says the filter was on and offers to ask again over every document."""
    if turn.answer is None or not turn.answer.weak_evidence or not turn.sources:
        return
    names = ", ".join(turn.sources)
    st.info(f"Only {escape(names)} {'was' if len(turn.sources) == 1 else 'were'} searched (the sidebar's document filter).")
    if retry_key:
        st.button("Search all documents", icon="🔎", key=f"all-{retry_key}", on_click=_search_everything, args=(turn.question,))


def retry_question() -> str | None:
    """The question whose "Ask again" button was pressed, once."""
    return st.session_state.pop(RETRY_KEY, None)


def render_error(turn: Turn, retry_key: str | None) -> None:
    if turn.partial:
        st.markdown(answer_markdown(turn.partial))
    st.error(f"This question could not be answered: {escape(turn.error or '')}\n\nYour question is kept; ask it again below.")
    if retry_key:
        st.button("Ask again", icon="🔁", key=retry_key, on_click=_ask_again, args=(turn.question,))


def show_turn(turn: Turn, retry_key: str | None = None, links: SourceLinks | None = None, log: QuestionLog | None = None) -> None:
    """Replay a finished turn (with "Ask again"/"Search all documents" buttons when ``retry_key`` is given)."""
    with st.chat_message("user"):
        st.markdown(escape(turn.question))
    with st.chat_message("assistant"):
        if turn.answer is not None:
            st.markdown(answer_markdown(turn.answer.answer))
            render_searched_for(turn, retry_key)
            render_filter_refusal(turn, retry_key)
            render_answer(turn.answer, turn.question, turn.searched_for, links)
            render_feedback(log, turn.question_id)
        elif turn.error is None:  # the run was interrupted (e.g. another question was sent meanwhile)
            if turn.partial:
                st.markdown(answer_markdown(turn.partial))
            st.warning("This answer was interrupted before it finished; ask again to get it whole.")
            if retry_key:
                st.button("Ask again", icon="🔁", key=retry_key, on_click=_ask_again, args=(turn.question,))
        else:
            render_error(turn, retry_key)


def _stream(slot, tokens: Iterator[str], turn: Turn) -> None:
    """Show tokens as they arrive, rendered safely (a half-streamed image must not load either) and kept in the turn,
    so a failure mid-stream shows what had arrived."""
    for token in tokens:
        turn.partial += token
        slot.markdown(answer_markdown(turn.partial) + CURSOR)


def ask(
    runtime: Runtime, turns: list[Turn], question: str, sources: list[str] | None, streaming: bool, links: SourceLinks | None = None
) -> Turn:
    """Answer one question on the page. The turn joins ``turns`` first, so nothing can lose the question.

    A question whose "Search my question as asked" button was pressed is searched without the conversation."""
    as_asked = st.session_state.pop(AS_ASKED_KEY, None) == question
    history = [] if as_asked else chat_history(turns)
    turn = Turn(question=question, sources=sources)
    turns.append(turn)
    with st.chat_message("user"):
        st.markdown(escape(question))
    with st.chat_message("assistant"):
        slot = st.empty()
        try:
            with st.spinner("Searching the documentation…"):
                engine = DocsChatEngine.from_runtime(runtime, sources=sources, chat_history=history)
                reply = engine.stream_chat(question) if streaming else engine.chat(question)
            response = query_response(reply)
            if streaming:
                _stream(slot, reply.response_gen, turn)
                answer = to_answer(question, response, answer_text=clean_citations(turn.partial, len(response.source_nodes)))
            else:
                answer = to_answer(question, response)
        except Exception as exc:  # any backend failure: keep the question and say what went wrong
            logger.exception("question failed: %s", question)
            turn.error = readable_error(exc)
            slot.empty()
            render_error(turn, f"retry-{len(turns)}")
            return turn
        turn.answer, turn.searched_for, turn.partial = answer, response.metadata.get(STANDALONE_KEY), ""
        turn.question_id = response.metadata.get("question_id")
        slot.markdown(answer_markdown(answer.answer))
        render_searched_for(turn, f"retry-{len(turns)}")
        render_filter_refusal(turn, f"retry-{len(turns)}")
        render_answer(answer, question, turn.searched_for, links)
        render_feedback(runtime.question_log, turn.question_id)
    return turn
