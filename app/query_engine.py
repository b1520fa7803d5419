"""The query engine: hybrid retrieval, evidence filter and optional reranking, cited answer, with per-stage timings."""

from __future__ import annotations

import asyncio
import time

from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.query_engine import CustomQueryEngine, RetrieverQueryEngine
from llama_index.core.schema import QueryBundle

from integrations.question_context import current_question


class QuestionTooLong(ValueError):
    """A question over ``retrieval.max_question_chars``: refused before any model or paid API sees it."""


class DocsQueryEngine(RetrieverQueryEngine):
    """RetrieverQueryEngine that reports what its question context learned, and how long each stage took.

    ``query`` opens the question context (integrations.question_context); its
    notices, skipped backends, evidence verdict and ``timings_ms`` (retrieve,
    rerank, generate, total) end up in the response metadata. With a usage
    meter, each answer's total time feeds its latency alert.
    """

    def __init__(self, *args, meter=None, max_question_chars: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._meter = meter
        self._max_question_chars = max_question_chars

    def check_question(self, question: str) -> None:
        """Refuse a question over the length limit (a 120 KB question cost 18 normal ones), naming the setting."""
        limit = self._max_question_chars
        if limit is not None and len(question) > limit:
            raise QuestionTooLong(
                f"the question is {len(question):,} characters, over the {limit:,} this index accepts "
                "(retrieval.max_question_chars): ask about one thing at a time and quote only the lines that matter"
            )

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        self.check_question(query_bundle.query_str)
        context = current_question()
        started = time.perf_counter()
        nodes = self._retriever.retrieve(query_bundle)
        retrieved = time.perf_counter()
        nodes = self._apply_node_postprocessors(nodes, query_bundle=query_bundle)
        reranked = time.perf_counter()
        response = self._response_synthesizer.synthesize(query=query_bundle, nodes=nodes)
        done = time.perf_counter()
        context.timings_ms.update(
            retrieve=(retrieved - started) * 1000,
            rerank=(reranked - retrieved) * 1000,
            generate=(done - reranked) * 1000,
            total=(done - started) * 1000,
        )
        response.metadata = {**(response.metadata or {}), **context.metadata()}
        if self._meter is not None:
            _observe_latency(response, self._meter, started)
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        # The same steps as the sync path, off the event loop: every stage here is blocking (Milvus Lite, ONNX, the
        # chain's HTTP client). The worker thread runs in a copy of this context, so it sees the same question.
        return await asyncio.to_thread(self._query, query_bundle)


class EmptyIndexQueryEngine(CustomQueryEngine):
    """The engine over an index with no documents: every question gets the one line that says how to fill it."""

    message: str

    def custom_query(self, query_str: str) -> Response:
        return Response(response=self.message, source_nodes=[], metadata={"answered_by": None, "empty_index": True})


def _observe_latency(response: RESPONSE_TYPE, meter, started: float) -> None:
    """Report the answer's end-to-end time to the meter (for a stream: when its last token is out)."""
    if isinstance(response, StreamingResponse) and response.response_gen is not None:
        inner = response.response_gen

        def tokens():
            yield from inner
            meter.observe_answer((time.perf_counter() - started) * 1000)

        response.response_gen = tokens()
    else:
        meter.observe_answer(response.metadata["timings_ms"]["total"])
