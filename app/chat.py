"""Chat over the documentation: follow-ups are condensed to a standalone question before retrieval (docs/asking.md
"Follow-up questions": by the LLM, or by the retrieval when there is none)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.chat_engine import CondenseQuestionChatEngine
from llama_index.core.chat_engine.condense_question import DEFAULT_PROMPT
from llama_index.core.chat_engine.types import AgentChatResponse, StreamingAgentChatResponse
from llama_index.core.llms import LLM
from llama_index.core.memory import Memory
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts.base import BasePromptTemplate
from llama_index.core.schema import QueryBundle
from llama_index.core.tools import ToolOutput

from integrations.adapters.chat_completion import aiter_in_thread
from integrations.backend_errors import AllBackendsFailedError, transient_errors
from integrations.evidence_filter import WeakEvidenceFilter
from integrations.keyword_text import QUESTION_WORDS, keyword_text
from integrations.question_context import question_context

logger = logging.getLogger(__name__)

STANDALONE_KEY = "standalone_question"
MAX_CARRIED_TERMS = 6
MEMORY_TOKEN_LIMIT = 3000
MAX_REWRITE_WORDS = 60
_REWRITE_LABEL = re.compile(r"^(?:\**\s*)?(?:standalone question|rewritten question|question)\s*:\s*\**", re.IGNORECASE)
#: Words of the condense prompt itself: a reply holding them echoes the prompt.
_PROMPT_MARKER = re.compile(r"chat history|follow up message|standalone question", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/:']*[A-Za-z0-9]|[A-Za-z0-9]|--?[A-Za-z0-9][\w\-]*")


def _stems(text: str) -> set[str]:
    return set(keyword_text(text).split())


def key_terms(text: str) -> list[str]:
    """The words of a question that say what it is about, in order, without repeats."""
    terms: list[str] = []
    seen: set[str] = set()
    for word in _WORD.findall(text):
        lower = word.lower()
        if lower in QUESTION_WORDS or lower in seen or not _stems(word):
            continue
        seen.add(lower)
        terms.append(word)
    return terms


def previous_standalone(history: Sequence[ChatMessage]) -> str | None:
    """The standalone form of the latest user question in the history."""
    for message in reversed(history):
        if message.role == MessageRole.USER:
            return str(message.additional_kwargs.get(STANDALONE_KEY) or message.content or "")
    return None


def condensed_reading(history: Sequence[ChatMessage], question: str) -> str | None:
    """The question with the previous question's key terms it lacks, or None."""
    previous = previous_standalone(history)
    if not previous:
        return None
    own = _stems(question)
    carried = [term for term in key_terms(previous) if not _stems(term) <= own][:MAX_CARRIED_TERMS]
    return f"{question.strip()} ({' '.join(carried)})" if carried else None


@dataclass(frozen=True)
class _Found:
    """What one search found, and whether the evidence filters would answer from it."""

    passages: list[str]  # node ids: a context's id names its chunks
    by_both: set[str]
    confident: bool
    best: float  # the text's best cosine over the index (-1 when it could not be embedded)


def _search(retriever: BaseRetriever, evidence: Sequence[BaseNodePostprocessor], text: str) -> _Found:
    bundle = QueryBundle(text)
    with question_context() as context:  # the retriever's facts about this search stay out of the question being answered
        nodes = retriever.retrieve(bundle)
        kept = list(nodes)
        for stage in evidence:
            kept = stage.postprocess_nodes(kept, query_bundle=bundle)
    both = {n.node.node_id for n in nodes if n.node.metadata.get("dense_score") is not None and n.node.metadata.get("bm25_score")}
    best = context.dense_score if context.dense_score is not None else -1.0
    return _Found([n.node.node_id for n in nodes], both, bool(kept), best)


def searched_as(retriever: BaseRetriever, evidence: Sequence[BaseNodePostprocessor], question: str, condensed: str | None) -> str:
    """``condensed`` when the retrieval says the question follows up, else ``question`` (docs/asking.md)."""
    if not condensed:
        return question
    alone, both = _search(retriever, evidence, question), _search(retriever, evidence, condensed)
    if not both.passages or not both.confident:
        return question
    if not alone.confident:  # refused alone, answerable with the conversation's terms
        return condensed
    if alone.passages and both.passages[0] == alone.passages[0]:
        return question
    # Adding the conversation's terms made the search surer (an unrelated topic dilutes it) and its new best passage
    # is one the question finds by itself.
    if both.best > alone.best and both.passages[0] in alone.by_both:
        return condensed
    return question


def history_text(history: Sequence[ChatMessage]) -> str:
    """The chat history for the condense prompt: "role: text" lines, without the messages' bookkeeping fields."""
    return "\n".join(f"{m.role.value}: {m.content or ''}" for m in history)


def rewritten_question(reply: str) -> str | None:
    """The first line of an LLM's condense reply without its label; None when it echoes the prompt or runs long."""
    lines = (_REWRITE_LABEL.sub("", line).strip().strip('"') for line in reply.splitlines())
    line = next((line for line in lines if line), "")
    if not line or _PROMPT_MARKER.search(line) or len(line.split()) > MAX_REWRITE_WORDS:
        return None
    return line


class DocsChatEngine(CondenseQuestionChatEngine):
    """CondenseQuestionChatEngine whose condensation works without an LLM, and whose streams need no thread.

    ``sources[0].raw_output`` of a reply is the query engine's response, with ``standalone_question`` in its metadata.
    """

    def __init__(
        self,
        query_engine: BaseQueryEngine,
        condense_question_prompt: BasePromptTemplate,
        memory: Memory,
        llm: LLM | None,
        streaming_engine: BaseQueryEngine | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(query_engine, condense_question_prompt, memory, llm, **kwargs)
        # Streams come from their own engine (its synthesizer streams for good); without one a stream is one chunk.
        self._streaming_engine = streaming_engine
        self._condense_ms = 0.0

    @classmethod
    def from_runtime(
        cls, runtime: Any, *, sources: list[str] | None = None, chat_history: list[ChatMessage] | None = None
    ) -> DocsChatEngine:
        """A chat engine over ``build_query_engines(runtime, sources)`` that answers with ``runtime.llm``."""
        from app.composition import build_query_engines

        memory = Memory.from_defaults(chat_history=list(chat_history or []), token_limit=MEMORY_TOKEN_LIMIT)
        engine, streaming_engine = build_query_engines(runtime, sources)
        return cls(engine, DEFAULT_PROMPT, memory, runtime.llm, streaming_engine=streaming_engine)

    def _condense_question(self, chat_history: list[ChatMessage], last_message: str) -> str:
        if check := getattr(self._query_engine, "check_question", None):
            check(last_message)  # before condensing, which may already call a paid LLM (sync and async paths)
        started = time.perf_counter()
        try:
            return self._condense(chat_history, last_message)
        finally:
            self._condense_ms = (time.perf_counter() - started) * 1000

    def _condense(self, chat_history: list[ChatMessage], last_message: str) -> str:
        if not chat_history:
            return last_message
        if self._llm is None:
            return self._by_retrieval(chat_history, last_message)
        prompt = self._condense_question_prompt.format(question=last_message, chat_history=history_text(chat_history))
        try:
            reply = self._llm.chat([ChatMessage(role=MessageRole.USER, content=prompt)])
        except (AllBackendsFailedError, *transient_errors()):
            logger.info("no LLM rewrote the follow-up; deciding it from the retrieval")
            return self._by_retrieval(chat_history, last_message)
        text = rewritten_question(reply.message.content or "")
        if text is None:
            logger.warning("the LLM's rewrite of the follow-up is not a question; deciding it from the retrieval")
            return self._by_retrieval(chat_history, last_message)
        return text

    def _by_retrieval(self, chat_history: list[ChatMessage], question: str) -> str:
        evidence = [p for p in getattr(self._query_engine, "_node_postprocessors", []) if isinstance(p, WeakEvidenceFilter)]
        condensed = condensed_reading(chat_history, question)
        return searched_as(self._query_engine.retriever, evidence, question, condensed)

    async def _acondense_question(self, chat_history: list[ChatMessage], last_message: str) -> str:
        return self._condense_question(chat_history, last_message)

    def _get_tool_output_from_response(self, query: str, response: RESPONSE_TYPE) -> ToolOutput:
        response.metadata = response.metadata or {}
        response.metadata[STANDALONE_KEY] = query
        timings = response.metadata.setdefault("timings_ms", {})
        timings["condense"] = self._condense_ms
        if not isinstance(response, StreamingResponse):  # a stream adds it when its last token is out
            timings["total"] = timings.get("total", 0.0) + self._condense_ms
        return super()._get_tool_output_from_response(query, response)

    def _query(self, message: str, chat_history: list[ChatMessage] | None, streaming: bool) -> tuple[str, RESPONSE_TYPE]:
        history = chat_history or self._memory.get(input=message)
        standalone = self._condense_question(history, message)
        logger.info("querying with: %s", standalone)
        engine = self._streaming_engine if streaming and self._streaming_engine is not None else self._query_engine
        return standalone, engine.query(standalone)

    def _remember(self, message: str, standalone: str, answer: str) -> None:
        self._memory.put(ChatMessage(role=MessageRole.USER, content=message, additional_kwargs={STANDALONE_KEY: standalone}))
        self._memory.put(ChatMessage(role=MessageRole.ASSISTANT, content=answer))

    def chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        standalone, response = self._query(message, chat_history, streaming=False)
        tool_output = self._get_tool_output_from_response(standalone, response)
        self._remember(message, standalone, str(response))
        return AgentChatResponse(response=str(response), sources=[tool_output], source_nodes=response.source_nodes)

    def stream_chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> StreamingAgentChatResponse:
        """Stream the answer in the caller's thread; a refusal (weak evidence) arrives as a single chunk."""
        standalone, response = self._query(message, chat_history, streaming=True)
        tool_output = self._get_tool_output_from_response(standalone, response)

        def chunks() -> Generator[ChatResponse, None, None]:
            text = ""
            deltas = response.response_gen if isinstance(response, StreamingResponse) else iter([str(response)])
            for delta in deltas:
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)
            if isinstance(response, StreamingResponse):
                response.response_txt = text
            self._remember(message, standalone, text)

        # The same list as the response's: the sources are renumbered in it when the stream ends.
        return StreamingAgentChatResponse(
            chat_stream=chunks(), sources=[tool_output], source_nodes=response.source_nodes, is_writing_to_memory=False
        )

    # The async twins run the sync turn off the event loop (every stage below is blocking), so both give the same
    # answer, refusal, sources and remembered standalone question.
    async def achat(self, message: str, chat_history: list[ChatMessage] | None = None) -> AgentChatResponse:
        return await asyncio.to_thread(self.chat, message, chat_history)

    async def astream_chat(self, message: str, chat_history: list[ChatMessage] | None = None) -> StreamingAgentChatResponse:
        reply = await asyncio.to_thread(self.stream_chat, message, chat_history)
        reply.achat_stream = aiter_in_thread(reply.chat_stream)
        return reply


def query_response(reply: AgentChatResponse | StreamingAgentChatResponse) -> Response | StreamingResponse:
    """The query engine's response behind a chat reply (source nodes, answered_by, notices, timings)."""
    return reply.sources[0].raw_output


__all__ = ["STANDALONE_KEY", "DocsChatEngine", "condensed_reading", "key_terms", "query_response", "searched_as"]
