"""The query engine: hybrid retrieval, optional reranking, cited answer, with per-stage timings."""

from __future__ import annotations

import time

from llama_index.core.base.response.schema import RESPONSE_TYPE, StreamingResponse
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle


class DocsQueryEngine(RetrieverQueryEngine):
    """RetrieverQueryEngine that records ``timings_ms`` (retrieve, rerank, generate, total) in the response metadata.

    With a usage meter, each answer's total time feeds its latency alert.
    """

    def __init__(self, *args, meter=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._meter = meter

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        started = time.perf_counter()
        nodes = self._retriever.retrieve(query_bundle)
        retrieved = time.perf_counter()
        nodes = self._apply_node_postprocessors(nodes, query_bundle=query_bundle)
        reranked = time.perf_counter()
        # Stages that degrade instead of failing (keyword-only search, the HF reranker keeping the fused order) say so here.
        notices = [n for p in [self._retriever, *self._node_postprocessors] if (n := getattr(p, "last_notice", None))]
        response = self._response_synthesizer.synthesize(query=query_bundle, nodes=nodes)
        done = time.perf_counter()
        response.metadata = response.metadata or {}
        response.metadata["timings_ms"] = {
            "retrieve": (retrieved - started) * 1000,
            "rerank": (reranked - retrieved) * 1000,
            "generate": (done - reranked) * 1000,
            "total": (done - started) * 1000,
        }
        if notices:
            _add_notices(response, notices)
        if self._meter is not None:
            _observe_latency(response, self._meter, started)
        return response


def _add_notices(response: RESPONSE_TYPE, notices: list[str]) -> None:
    def merge() -> None:
        current = list(response.metadata.get("notices") or [])
        response.metadata["notices"] = current + [n for n in notices if n not in current]

    merge()
    if isinstance(response, StreamingResponse) and response.response_gen is not None:
        inner = response.response_gen

        def tokens():
            merged = False
            for token in inner:
                if not merged:  # the synthesizer fills the metadata when the first token arrives
                    merge()
                    merged = True
                yield token
            merge()

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
