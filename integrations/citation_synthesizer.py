"""A response synthesizer whose answers cite numbered sources: "[n]" ↔ ``response.source_nodes[n-1]``.

Every backend (an LLM chain or the extractive answerer) sees the same prompt
from :mod:`integrations.citation_prompt`. When even the best match is only
weakly similar to the question, it says the documentation does not cover the
question instead of answering from noise. A question that names something no
passage contains (integrations.named_terms) needs stronger similarity, and its
answer says which names the docs never mention.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Sequence
from typing import Any

from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.synthesis import SynthesizeEndEvent, SynthesizeStartEvent
from llama_index.core.llms import LLM
from llama_index.core.response_synthesizers.base import BaseSynthesizer
from llama_index.core.schema import NodeWithScore, QueryBundle, QueryType, TextNode

from integrations.citation_prompt import build_messages, clean_citations
from integrations.extractive_llm import EXTRACTIVE_NAME
from integrations.hybrid_retriever import MISSING_NAMES_KEY, QUESTION_DENSE_KEY

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


def best_dense_score(nodes: Sequence[NodeWithScore]) -> float | None:
    """The question's best cosine similarity: over the whole index when the retriever says, else over these nodes."""
    scores = [n.node.metadata.get(key) for n in nodes for key in (QUESTION_DENSE_KEY, "dense_score")]
    scores = [s for s in scores if s is not None]
    return max(scores) if scores else None


def missing_names(nodes: Sequence[NodeWithScore]) -> list[str]:
    """Names in the question that no searched chunk contains, as the retriever recorded them."""
    return next((list(names) for n in nodes if (names := n.node.metadata.get(MISSING_NAMES_KEY))), [])


def missing_names_notice(names: Sequence[str]) -> str:
    return f"No passage in the documents mentions {', '.join(names)}."


class CitationSynthesizer(BaseSynthesizer):
    """Answer from numbered sources with [n] citations, or refuse on weak evidence."""

    def __init__(
        self,
        llm: LLM,
        min_dense_score: float | None = 0.44,
        min_dense_score_missing_names: float | None = 0.55,
        streaming: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(llm=llm, streaming=streaming, **kwargs)
        self.min_dense_score = min_dense_score
        self.min_dense_score_missing_names = min_dense_score_missing_names

    def _get_prompts(self) -> dict[str, Any]:
        return {}

    def _update_prompts(self, prompts: dict[str, Any]) -> None:
        return None

    def get_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any) -> str:
        nodes = [TextNode(text=chunk) for chunk in text_chunks]
        response = self._llm.chat(build_messages(query_str, nodes))
        return clean_citations(response.message.content or "", len(nodes))

    async def aget_response(self, query_str: str, text_chunks: Sequence[str], **response_kwargs: Any) -> str:
        return self.get_response(query_str, text_chunks, **response_kwargs)

    def _weak(self, nodes: Sequence[NodeWithScore]) -> bool:
        if not nodes:
            return True
        best = best_dense_score(nodes)
        thresholds = [self.min_dense_score]
        if missing_names(nodes):
            thresholds.append(self.min_dense_score_missing_names)
        return best is not None and any(t is not None and best < t for t in thresholds)

    @dispatcher.span
    def synthesize(
        self,
        query: QueryType,
        nodes: list[NodeWithScore],
        additional_source_nodes: Sequence[NodeWithScore] | None = None,
        **response_kwargs: Any,
    ) -> RESPONSE_TYPE:
        dispatcher.event(SynthesizeStartEvent(query=query))
        query_str = query.query_str if isinstance(query, QueryBundle) else str(query)
        started = time.perf_counter()
        names = missing_names(nodes)
        if self._weak(nodes):
            response: RESPONSE_TYPE = Response(
                response=NOT_COVERED,
                source_nodes=[],
                metadata={
                    "answered_by": None,
                    "weak_evidence": True,
                    "best_dense_score": best_dense_score(nodes),
                    "notices": [missing_names_notice(names)] if names else [],
                },
            )
        else:
            messages = build_messages(query_str, [n.node for n in nodes])
            if self._streaming:
                response = self._stream(messages, nodes, names)
            else:
                chat = self._llm.chat(messages)
                answered_by = chat.additional_kwargs.get("answered_by") or self._llm.metadata.model_name
                response = Response(
                    response=clean_citations(chat.message.content or "", len(nodes)),
                    source_nodes=list(nodes),
                    metadata=self._metadata(answered_by, chat.additional_kwargs, names),
                )
        response.metadata["generate_ms"] = (time.perf_counter() - started) * 1000
        dispatcher.event(SynthesizeEndEvent(query=query, response=response))
        return response

    def _metadata(self, answered_by: str, extra: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
        notices = list(extra.get("notices", []))
        if names:
            notices.append(missing_names_notice(names))
        if answered_by == EXTRACTIVE_NAME and not extra.get("fallbacks"):
            notices.append(NO_LLM_NOTICE)
        return {"answered_by": answered_by, "fallbacks": extra.get("fallbacks", []), "notices": notices, "weak_evidence": False}

    def _stream(self, messages: list, nodes: list[NodeWithScore], names: Sequence[str]) -> StreamingResponse:
        stream = self._llm.stream_chat(messages)
        metadata: dict[str, Any] = {}

        def tokens() -> Generator[str, None, None]:
            for chunk in stream:
                if not metadata:
                    answered_by = chunk.additional_kwargs.get("answered_by") or self._llm.metadata.model_name
                    metadata.update(self._metadata(answered_by, chunk.additional_kwargs, names))
                    response.metadata.update(metadata)
                for notice in chunk.additional_kwargs.get("notices", []):  # e.g. the last chunk says the answer was cut
                    if notice not in response.metadata["notices"]:
                        response.metadata["notices"].append(notice)
                if chunk.delta:
                    yield chunk.delta

        response = StreamingResponse(response_gen=tokens(), source_nodes=list(nodes), metadata={})
        return response
