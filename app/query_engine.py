"""The query engine: hybrid retrieval, evidence filter and optional reranking, cited answer, with per-stage timings."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time

from llama_index.core.base.response.schema import RESPONSE_TYPE, Response, StreamingResponse
from llama_index.core.query_engine import CustomQueryEngine, RetrieverQueryEngine
from llama_index.core.schema import QueryBundle

from app.question_log import QuestionLog, outcome_of
from integrations.citation_prompt import CITATION
from integrations.question_context import QuestionContext, current_question

logger = logging.getLogger(__name__)
#: A question log that cannot be written (full or read-only disk, a damaged file) never costs the answer.
_LOG_FAILURES = (sqlite3.Error, OSError, ValueError)


class QuestionTooLong(ValueError):
    """A question over ``retrieval.max_question_chars``: refused before any model or paid API sees it."""


class DocsQueryEngine(RetrieverQueryEngine):
    """RetrieverQueryEngine that puts its question's context and stage timings (docs/asking.md) in the response metadata,
    feeds the meter's latency alert and logs the question (``filtered``: the retriever searches only some documents)."""

    def __init__(
        self,
        *args,
        meter=None,
        question_log: QuestionLog | None = None,
        filtered: bool = False,
        max_question_chars: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._meter = meter
        self._log = question_log
        self._filtered = filtered
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
        if isinstance(response, StreamingResponse) and response.response_gen is not None:
            _time_stream(response, started, reranked)
        if self._meter is not None:
            _observe_latency(response, self._meter, started)
        if self._log is not None:
            _log_question(self._log, query_bundle.query_str, response, context, self._filtered)
        return response

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        # Every stage blocks (Milvus Lite, ONNX, HTTP); the worker thread runs in a copy of this context.
        return await asyncio.to_thread(self._query, query_bundle)


class EmptyIndexQueryEngine(CustomQueryEngine):
    """The engine over an index with no documents: every question gets the one line that says how to fill it."""

    message: str

    def custom_query(self, query_str: str) -> Response:
        return Response(response=self.message, source_nodes=[], metadata={"answered_by": None, "empty_index": True})


def _time_stream(response: StreamingResponse, started: float, reranked: float) -> None:
    """A stream's first_token, generate and total, set when its tokens arrive (the answer step is not over before)."""
    before, inner = response.metadata["timings_ms"], response.response_gen

    def tokens():
        first = None
        for token in inner:
            if token and first is None:
                first = time.perf_counter()
            yield token
        end = time.perf_counter()
        # The synthesizer may have put a fresh timings dict in the metadata meanwhile; a chat engine wrote condense
        # into the first one before streaming.
        timings = response.metadata.setdefault("timings_ms", before)
        condense = before.get("condense", timings.get("condense", 0.0))
        timings.update({k: v for k, v in before.items() if k not in timings})
        timings.update(generate=(end - reranked) * 1000, total=condense + (end - started) * 1000)
        if first is not None:
            timings["first_token"] = condense + (first - started) * 1000

    response.response_gen = tokens()


def cited_sources(text: str, response: RESPONSE_TYPE) -> list[str]:
    """The files an answer cites, in the order of their numbers."""
    numbers = sorted({int(n) for n in CITATION.findall(text)})
    nodes = response.source_nodes
    return list(dict.fromkeys(str(nodes[n - 1].node.metadata.get("source", "")) for n in numbers if 0 < n <= len(nodes)))


def _log_question(log: QuestionLog, question: str, response: RESPONSE_TYPE, context: QuestionContext, filtered: bool) -> None:
    """Log the question with its outcome; a stream's outcome is settled when its last token is out."""

    def settle(text: str) -> tuple[str, str, list[str]]:
        sources = cited_sources(text, response)
        return (*outcome_of(context.weak_evidence, context.missing_names, filtered, bool(sources)), sources)

    streaming = isinstance(response, StreamingResponse) and response.response_gen is not None
    outcome, reason, sources = settle("" if streaming else str(response))
    answered_by = response.metadata.get("answered_by")
    try:
        question_id = log.record(question, outcome, reason, context.missing_names, sources, context.dense_score, answered_by)
    except _LOG_FAILURES as exc:
        logger.warning("the question was answered but not logged for `gaps`: %s", exc)
        return
    response.metadata["question_id"] = question_id
    if streaming and not context.weak_evidence:
        inner = response.response_gen

        def tokens():
            text = ""
            for token in inner:
                text += token
                yield token
            try:
                log.update(question_id, *settle(text), response.metadata.get("answered_by"))
            except _LOG_FAILURES as exc:
                logger.warning("the streamed answer's outcome was not logged for `gaps`: %s", exc)

        response.response_gen = tokens()


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
