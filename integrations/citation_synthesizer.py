"""A response synthesizer whose answers cite numbered sources: "[n]" ↔ ``response.source_nodes[n-1]``.

Every backend (an LLM chain or the extractive answerer) sees the same prompt
from :mod:`integrations.citation_prompt`. When even the best match is only
weakly similar to the question, it says the documentation does not cover the
question instead of answering from noise.
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
from integrations.hybrid_retriever import QUESTION_DENSE_KEY

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


class CitationSynthesizer(BaseSynthesizer):
    """Answer from numbered sources with [n] citations, or refuse on weak evidence."""

    def __init__(self, llm: LLM, min_dense_score: float | None = 0.25, streaming: bool = False, **kwargs: Any) -> None:
        super().__init__(llm=llm, streaming=streaming, **kwargs)
        self.min_dense_score = min_dense_score

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
        return self.min_dense_score is not None and best is not None and best < self.min_dense_score

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
        if self._weak(nodes):
            response: RESPONSE_TYPE = Response(
                response=NOT_COVERED,
                source_nodes=[],
                metadata={"answered_by": None, "weak_evidence": True, "best_dense_score": best_dense_score(nodes), "notices": []},
            )
        else:
            messages = build_messages(query_str, [n.node for n in nodes])
            if self._streaming:
                response = self._stream(messages, nodes)
            else:
                chat = self._llm.chat(messages)
                answered_by = chat.additional_kwargs.get("answered_by") or self._llm.metadata.model_name
                response = Response(
                    response=clean_citations(chat.message.content or "", len(nodes)),
                    source_nodes=list(nodes),
                    metadata=self._metadata(answered_by, chat.additional_kwargs),
                )
        response.metadata["generate_ms"] = (time.perf_counter() - started) * 1000
        dispatcher.event(SynthesizeEndEvent(query=query, response=response))
        return response

    def _metadata(self, answered_by: str, extra: dict[str, Any]) -> dict[str, Any]:
        notices = list(extra.get("notices", []))
        if answered_by == EXTRACTIVE_NAME and not extra.get("fallbacks"):
            notices.append(NO_LLM_NOTICE)
        return {"answered_by": answered_by, "fallbacks": extra.get("fallbacks", []), "notices": notices, "weak_evidence": False}

    def _stream(self, messages: list, nodes: list[NodeWithScore]) -> StreamingResponse:
        stream = self._llm.stream_chat(messages)
        metadata: dict[str, Any] = {}

        def tokens() -> Generator[str, None, None]:
            for chunk in stream:
                if not metadata:
                    answered_by = chunk.additional_kwargs.get("answered_by") or self._llm.metadata.model_name
                    metadata.update(self._metadata(answered_by, chunk.additional_kwargs))
                    response.metadata.update(metadata)
                if chunk.delta:
                    yield chunk.delta

        response = StreamingResponse(response_gen=tokens(), source_nodes=list(nodes), metadata={})
        return response
