"""A response synthesizer whose answers cite numbered sources: "[n]" ↔ ``response.source_nodes[n-1]``.

The LLM (usually a fallback chain) gets the prompt of
:mod:`integrations.citation_prompt`. When there is no LLM, or every member of the
chain failed, the synthesizer answers from the nodes it holds by quoting their
best sentences (:mod:`integrations.extractive_answer`). Either way each marker
is checked against the source it cites and the sources are renumbered 1..k in
the order the answer first cites them; uncited sources follow. With no nodes
(the evidence filter dropped them) it says the documentation does not cover the
question. Notices, skipped backends and the evidence verdict come from the
question context (:mod:`integrations.question_context`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
from collections.abc import Generator, Iterator, Sequence
from typing import Any

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
from integrations.extractive_answer import EXTRACTIVE_NAME, Choice, ExtractiveAnswerer
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


class CitationSynthesizer(BaseSynthesizer):
    """Answer from numbered sources with checked [n] citations: by the LLM, else by quoting; refuse without nodes."""

    def __init__(
        self,
        llm: LLM | None = None,
        extractive: ExtractiveAnswerer | None = None,
        streaming: bool = False,
        evidence: WeakEvidenceFilter | None = None,
    ) -> None:
        # MockLLM is LlamaIndex's own "no LLM" (what Settings.llm = None gives): the base would otherwise resolve
        # Settings.llm to OpenAI. Answers come from self._chain; the base keeps its LLM for its prompt helpers only.
        super().__init__(llm=llm if llm is not None else MockLLM(), streaming=streaming, empty_response=NOT_COVERED)
        self._chain = llm
        self._extractive = extractive or ExtractiveAnswerer()
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
        # response_gen with integrations.backend_errors.aiter_in_thread.
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
        """The raw answer: the LLM's (streamed when the response is), or the extractive one when there is no LLM or none could answer."""
        if self._chain is None:
            context.notice(NO_LLM_NOTICE)
        else:
            messages = build_messages(question, [n.node for n in nodes])
            try:
                if isinstance(response, StreamingResponse):
                    stream = iter(self._chain.stream_chat(messages))
                    first = next(stream, None)  # a chain commits to a member (or fails) at its first token
                    chunks: Iterator[ChatResponse] = itertools.chain([first] if first is not None else [], stream)
                else:
                    first = self._chain.chat(messages)
                    chunks = iter([first])
            except (AllBackendsFailedError, *transient_errors()) as exc:
                context.fallbacks.extend(getattr(exc, "fallbacks", None) or [f"{self._chain.metadata.model_name}: {describe_failure(exc)}"])
                logger.info("no LLM could answer; quoting the sources instead")
            else:
                extra = first.additional_kwargs if first is not None else {}
                context.fallbacks.extend(extra.get("fallbacks", []))
                self._answered(response, extra.get("answered_by") or self._chain.metadata.model_name, context)
                for chunk in chunks:
                    for notice in chunk.additional_kwargs.get("notices", []):  # e.g. the answer was cut at max_tokens
                        context.notice(notice)
                    yield (chunk.delta or "") if isinstance(response, StreamingResponse) else (chunk.message.content or "")
                return
        self._answered(response, EXTRACTIVE_NAME, context)
        places = [f"{n.node.metadata.get('source', '')} > {n.node.metadata.get('section', '')}" for n in nodes]
        choice = self._extractive.choose(question, _texts(nodes), context, places)
        _label_quotes(nodes, choice)
        context.weak_evidence = context.weak_evidence or choice.refused
        yield from _STREAMED_WORD.findall(choice.text)

    @staticmethod
    def _answered(response: Response | StreamingResponse | None, by: str, context: QuestionContext) -> None:
        if response is not None:
            response.metadata["answered_by"] = by
            response.metadata.update(context.metadata())
