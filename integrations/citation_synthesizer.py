"""A response synthesizer whose answers cite numbered sources: "[n]" ↔ ``response.source_nodes[n-1]``.

The first of an ordered list of answerers that gives an answer writes it (the LLM chain, then quoting, which always
answers); each marker is checked against its source and the sources renumbered in order of first citation."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Generator, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.synthesis import SynthesizeEndEvent, SynthesizeStartEvent
from llama_index.core.llms import LLM, MockLLM
from llama_index.core.response_synthesizers.base import BaseSynthesizer
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, QueryType, TextNode

from integrations.backend_errors import AllBackendsFailedError, describe_failure, transient_errors
from integrations.citation_prompt import CitationChecker, build_messages, reorder
from integrations.evidence_filter import WeakEvidenceFilter
from integrations.extractive_answer import EXTRACTIVE_NAME, Choice, ExtractiveAnswerer, place
from integrations.question_context import QuestionContext, current_question
from integrations.section_context import SECTIONS_KEY, quoted_section

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)

NOT_COVERED = (
    "The documentation does not seem to cover this question: no passage is close enough to quote. "
    "Try other words, or ingest the documents that answer it."
)
NO_LLM_NOTICE = (
    "No LLM is configured, so this answer quotes the most relevant sentences. "
    "For written answers choose a profile with an LLM, e.g. DOCSRAG_PROFILE=hf_api with HF_TOKEN set (see README)."
)
_STREAMED_WORD = re.compile(r"\S+\s*")


def dropped_notice(count: int) -> str:
    return f"{count} citation{'s' if count > 1 else ''} removed: the cited passage does not contain what the sentence says."


def _label_quotes(nodes: Sequence[NodeWithScore], choice: Choice) -> None:
    """A cited context that spans sections is labelled with the section its quotes are in."""
    for number, node in enumerate(nodes, start=1):
        paths = node.node.metadata.get(SECTIONS_KEY)
        headings = [unit.heading for unit in choice.units if unit.source == number]
        if paths and headings:
            node.node.metadata["section"] = quoted_section(paths, headings)


def _texts(nodes: Sequence[NodeWithScore]) -> list[str]:
    return [n.node.get_content(metadata_mode=MetadataMode.NONE) for n in nodes]


class Answer(NamedTuple):
    """An answerer's raw answer: who wrote it and its text piece by piece."""

    by: str
    deltas: Iterator[str]


class Answerer(Protocol):
    """One way to answer from numbered sources; None hands the question to the next answerer of the list."""

    def answer(self, question: str, nodes: list[NodeWithScore], context: QuestionContext, streaming: bool) -> Answer | None: ...


class LLMAnswerer:
    """Answers with an LLM (usually a fallback chain) and the citation prompt; None when no member could answer."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def answer(self, question: str, nodes: list[NodeWithScore], context: QuestionContext, streaming: bool) -> Answer | None:
        messages = build_messages(question, [n.node for n in nodes])
        try:
            if streaming:
                stream = iter(self.llm.stream_chat(messages))
                first = next(stream, None)  # a chain commits to a member (or fails) at its first token
                chunks: Iterator[ChatResponse] = itertools.chain([first] if first is not None else [], stream)
            else:
                first = self.llm.chat(messages)
                chunks = iter([first])
        except (AllBackendsFailedError, *transient_errors()) as exc:
            context.fallbacks.extend(getattr(exc, "fallbacks", None) or [f"{self.llm.metadata.model_name}: {describe_failure(exc)}"])
            logger.info("no LLM could answer; quoting the sources instead")
            return None
        extra = first.additional_kwargs if first is not None else {}
        context.fallbacks.extend(extra.get("fallbacks", []))

        def deltas() -> Iterator[str]:
            for chunk in chunks:
                for notice in chunk.additional_kwargs.get("notices", []):  # e.g. the answer was cut at max_tokens
                    context.notice(notice)
                yield (chunk.delta or "") if streaming else (chunk.message.content or "")

        return Answer(extra.get("answered_by") or self.llm.metadata.model_name, deltas())


class QuotingAnswerer:
    """Quotes the sources' best sentences (integrations.extractive_answer): always answers, or refuses."""

    def __init__(self, extractive: ExtractiveAnswerer | None = None) -> None:
        self.extractive = extractive or ExtractiveAnswerer()

    def answer(self, question: str, nodes: list[NodeWithScore], context: QuestionContext, streaming: bool) -> Answer:
        choice = self.extractive.choose(question, _texts(nodes), context, [place(n.node.metadata) for n in nodes])
        _label_quotes(nodes, choice)
        context.weak_evidence = context.weak_evidence or choice.refused
        return Answer(EXTRACTIVE_NAME, iter(_STREAMED_WORD.findall(choice.text)))


def default_answerers(llm: LLM | None = None, extractive: ExtractiveAnswerer | None = None) -> list[Answerer]:
    """The LLM (when there is one), then quoting."""
    return [*([LLMAnswerer(llm)] if llm is not None else []), QuotingAnswerer(extractive)]


class CitationSynthesizer(BaseSynthesizer):
    """Answer with checked [n] citations by the first answerer that can; refuse without nodes. ``streaming`` is fixed."""

    def __init__(
        self, answerers: Sequence[Answerer] | None = None, streaming: bool = False, evidence: WeakEvidenceFilter | None = None
    ) -> None:
        self._answerers = list(answerers) if answerers is not None else default_answerers()
        if not self._answerers:
            raise ValueError("CitationSynthesizer needs at least one answerer (e.g. QuotingAnswerer())")
        llm = next((a.llm for a in self._answerers if isinstance(a, LLMAnswerer)), None)
        # MockLLM is LlamaIndex's own "no LLM" (what Settings.llm = None gives): the base would otherwise resolve
        # Settings.llm to OpenAI. Answers come from the answerers; the base keeps its LLM for its prompt helpers only.
        super().__init__(llm=llm if llm is not None else MockLLM(), streaming=streaming, empty_response=NOT_COVERED)
        self._has_llm = llm is not None
        # Judges the question when no evidence filter ran before (an engine built without one refuses alike).
        self._evidence = evidence or WeakEvidenceFilter()

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: dict[str, Any]) -> None:
        return None

    def get_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any) -> str:
        nodes = [NodeWithScore(node=TextNode(text=chunk)) for chunk in text_chunks]
        context = current_question()
        checker = CitationChecker(_texts(nodes))
        return "".join(checker.feed(delta) for delta in self._deltas(query_str, nodes, context, None)) + checker.flush()

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any) -> str:
        return await asyncio.to_thread(self.get_response, query_str, text_chunks, **response_kwargs)

    @dispatcher.span
    async def asynthesize(
        self,
        query: QueryType,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TYPE:
        # The sync path off the event loop (the chain's clients and the extractive embedder block); the worker thread
        # sees this question's context. A streamed answer is a StreamingResponse here too: iterate it, or wrap its
        # response_gen with integrations.adapters.chat_completion.aiter_in_thread.
        return await asyncio.to_thread(self.synthesize, query, nodes, additional_source_nodes, **response_kwargs)

    @dispatcher.span
    def synthesize(
        self,
        query: QueryType,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TYPE:
        dispatcher.event(SynthesizeStartEvent(query=query))
        question = query.query_str if isinstance(query, QueryBundle) else str(query)
        context = current_question()
        if not context.evidence_checked:
            nodes = self._evidence.postprocess_nodes(list(nodes), query_bundle=query if isinstance(query, QueryBundle) else None)
        response: RESPONSE_TYPE
        if not nodes:
            context.weak_evidence = True
            response = Response(response=NOT_COVERED, source_nodes=[], metadata={"answered_by": None, **context.metadata()})
        elif self._streaming:
            response = StreamingResponse(response_gen=iter(()), source_nodes=list(nodes), metadata=context.metadata())
            response.response_gen = self._stream(question, response, context)
        else:
            response = Response(response="", source_nodes=list(nodes), metadata={})
            for _ in self._stream(question, response, context):
                pass
        dispatcher.event(SynthesizeEndEvent(query=query, response=response))
        return response

    def _stream(self, question: str, response: Response | StreamingResponse, context: QuestionContext) -> Generator[str, None, None]:
        """The answer's checked, renumbered text piece by piece; at its end the response holds the final text and order."""
        nodes = list(response.source_nodes)
        checker = CitationChecker(_texts(nodes))
        for delta in self._deltas(question, nodes, context, response):
            if shown := checker.feed(delta):
                yield shown
        if rest := checker.flush():
            yield rest
        if checker.dropped:
            context.notice(dropped_notice(checker.dropped))
            logger.info("%s", dropped_notice(checker.dropped))
        # In place: holders of the list see the new order (a refusal shows no sources).
        response.source_nodes[:] = [] if context.weak_evidence else reorder(nodes, checker.order)
        if isinstance(response, StreamingResponse):
            response.response_txt = checker.text
        else:
            response.response = checker.text
        response.metadata.update(context.metadata())

    def _deltas(
        self, question: str, nodes: list[NodeWithScore], context: QuestionContext, response: Response | StreamingResponse | None
    ) -> Iterator[str]:
        """The raw answer of the first answerer that gives one (streamed when the response is)."""
        if not self._has_llm:
            context.notice(NO_LLM_NOTICE)
        for answerer in self._answerers:
            answer = answerer.answer(question, nodes, context, isinstance(response, StreamingResponse))
            if answer is not None:
                self._answered(response, answer.by, context)
                yield from answer.deltas
                return
        raise AllBackendsFailedError("no answerer of the list could answer (the last one should be QuotingAnswerer)")

    @staticmethod
    def _answered(response: Response | StreamingResponse | None, by: str, context: QuestionContext) -> None:
        if response is not None:
            response.metadata["answered_by"] = by
            response.metadata.update(context.metadata())
