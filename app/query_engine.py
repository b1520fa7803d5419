"""The query engine: hybrid retrieval, optional reranking, cited answer, with per-stage timings."""

from __future__ import annotations

import time

from llama_index.core.base.response.schema import RESPONSE_TYPE
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import QueryBundle


class DocsQueryEngine(RetrieverQueryEngine):
    """RetrieverQueryEngine that records ``timings_ms`` (retrieve, rerank, generate, total) in the response metadata."""

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        started = time.perf_counter()
        nodes = self._retriever.retrieve(query_bundle)
        retrieved = time.perf_counter()
        nodes = self._apply_node_postprocessors(nodes, query_bundle=query_bundle)
        reranked = time.perf_counter()
        response = self._response_synthesizer.synthesize(query=query_bundle, nodes=nodes)
        done = time.perf_counter()
        response.metadata = response.metadata or {}
        response.metadata["timings_ms"] = {
            "retrieve": (retrieved - started) * 1000,
            "rerank": (reranked - retrieved) * 1000,
            "generate": (done - reranked) * 1000,
            "total": (done - started) * 1000,
        }
        return response
