"""The chat: turns kept in the session, asked through DocsChatEngine, streamed when asked to.

A question is stored as a turn before it is answered, so a failing backend
never loses it: the turn keeps the question, any text streamed so far and a
readable error, and the page offers to ask it again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import streamlit as st
from llama_index.core.base.llms.types import ChatMessage, MessageRole

from app.answers import Answer, to_answer
from app.chat import STANDALONE_KEY, DocsChatEngine, query_response
from app.composition import Runtime
from app.ui.render import answer_markdown, escape, render_answer
from integrations.citation_prompt import clean_citations

logger = logging.getLogger(__name__)

MAX_ERROR_CHARS = 600
RETRY_KEY = "retry_question"


@dataclass
class Turn:
    question: str
    answer: Answer | None = None
    searched_for: str | None = None
    error: str | None = None
    partial: str = ""


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


def retry_question() -> str | None:
    """The question whose "Ask again" button was pressed, once."""
    return st.session_state.pop(RETRY_KEY, None)


def render_error(turn: Turn, retry_key: str | None) -> None:
    if turn.partial:
        st.markdown(answer_markdown(turn.partial))
    st.error(f"This question could not be answered: {escape(turn.error or '')}\n\nYour question is kept; ask it again below.")
    if retry_key:
        st.button("Ask again", icon="🔁", key=retry_key, on_click=_ask_again, args=(turn.question,))


def show_turn(turn: Turn, retry_key: str | None = None) -> None:
    """Replay a finished turn (with an "Ask again" button when ``retry_key`` is given and it has no answer)."""
    with st.chat_message("user"):
        st.markdown(escape(turn.question))
    with st.chat_message("assistant"):
        if turn.answer is not None:
            st.markdown(answer_markdown(turn.answer.answer))
            render_answer(turn.answer, turn.question, turn.searched_for)
        elif turn.error is None:  # the run was interrupted (e.g. another question was sent meanwhile)
            if turn.partial:
                st.markdown(answer_markdown(turn.partial))
            st.warning("This answer was interrupted before it finished; ask again to get it whole.")
            if retry_key:
                st.button("Ask again", icon="🔁", key=retry_key, on_click=_ask_again, args=(turn.question,))
        else:
            render_error(turn, retry_key)


def _timed(tokens: Iterator[str], started: float, timings: dict[str, float]) -> Iterator[str]:
    for token in tokens:
        if "first_token" not in timings and token:
            timings["first_token"] = (time.perf_counter() - started) * 1000
        yield token


def _kept(tokens: Iterator[str], turn: Turn) -> Iterator[str]:
    """Tokens as they stream, also kept in the turn so a failure mid-stream shows what had arrived."""
    for token in tokens:
        turn.partial += token
        yield token


def ask(runtime: Runtime, turns: list[Turn], question: str, sources: list[str] | None, streaming: bool) -> Turn:
    """Answer one question on the page. The turn joins ``turns`` first, so nothing can lose the question."""
    history = chat_history(turns)
    turn = Turn(question=question)
    turns.append(turn)
    with st.chat_message("user"):
        st.markdown(escape(question))
    with st.chat_message("assistant"):
        slot = st.empty()
        started = time.perf_counter()
        timings: dict[str, float] = {}
        try:
            with st.spinner("Searching the documentation…"):
                engine = DocsChatEngine.from_runtime(runtime, sources=sources, chat_history=history)
                reply = engine.stream_chat(question) if streaming else engine.chat(question)
            response = query_response(reply)
            if streaming:
                slot.write_stream(_kept(_timed(reply.response_gen, started, timings), turn), cursor="▌")
                answer = to_answer(question, response, answer_text=clean_citations(turn.partial, len(response.source_nodes)))
            else:
                answer = to_answer(question, response)
        except Exception as exc:  # any backend failure: keep the question and say what went wrong
            logger.exception("question failed: %s", question)
            turn.error = readable_error(exc)
            slot.empty()
            render_error(turn, f"retry-{len(turns)}")
            return turn
        answer.timings_ms.update(timings)
        turn.answer, turn.searched_for, turn.partial = answer, response.metadata.get(STANDALONE_KEY), ""
        slot.markdown(answer_markdown(answer.answer))
        render_answer(answer, question, turn.searched_for)
    return turn
