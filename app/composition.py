"""The composition root: settings in, embedders, stores and engines out.

The UI, the CLI and notebooks call only these functions; nothing else picks
concrete classes. LLMs and embedders are always passed explicitly (LlamaIndex's
global Settings would default to OpenAI).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.llms import LLM

from settings import Settings, load_settings

logger = logging.getLogger(__name__)

EMBEDDING_DIM = 384


def build_embed_model(settings: Settings) -> BaseEmbedding:
    emb = settings.embedding
    if emb.backend == "local":
        from integrations.local_embedding import LocalMiniLMEmbedding

        return LocalMiniLMEmbedding(onnx_batch_size=emb.batch_size, threads=emb.threads, max_tokens=emb.max_tokens)
    raise ValueError(f"embedding.backend={emb.backend!r} is not available in this build; use 'local'")


def build_llm(settings: Settings, embed_model: BaseEmbedding) -> LLM:
    """The answer backend. With an empty llm.chain it is the extractive answerer."""
    from integrations.extractive_llm import ExtractiveLLM

    if not settings.llm.chain:
        return ExtractiveLLM(embed_model=embed_model)
    raise ValueError(f"llm.chain={settings.llm.chain!r} is not available in this build; leave it empty")


@dataclass
class Runtime:
    """What a process opens once and shares between questions: settings, embedder, store."""

    settings: Settings
    embed_model: BaseEmbedding
    vector_store: object
    llm: LLM


def open_runtime(settings: Settings | None = None) -> Runtime:
    from app.store import open_vector_store

    settings = settings or load_settings()
    embed_model = build_embed_model(settings)
    store = open_vector_store(settings, EMBEDDING_DIM)
    return Runtime(settings=settings, embed_model=embed_model, vector_store=store, llm=build_llm(settings, embed_model))


def build_retriever(runtime: Runtime, sources: list[str] | None = None, top_k: int | None = None):
    from integrations.hybrid_retriever import MilvusHybridRetriever

    r = runtime.settings.retrieval
    return MilvusHybridRetriever(
        vector_store=runtime.vector_store,
        embed_model=runtime.embed_model,
        top_k=top_k or r.top_k,
        dense_top_k=max(r.dense_top_k, top_k or 0),
        sparse_top_k=max(r.sparse_top_k, top_k or 0),
        rrf_k=r.rrf_k,
        dense_weight=r.dense_weight,
        sparse_weight=r.sparse_weight,
        sources=sources,
    )


def build_query_engine(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    sources: list[str] | None = None,
    streaming: bool = False,
):
    """A LlamaIndex query engine over the index named by the settings.

    ``sources`` restricts retrieval to these files (paths relative to the ingested folder).
    """
    from app.query_engine import DocsQueryEngine
    from integrations.citation_synthesizer import CitationSynthesizer

    runtime = runtime or open_runtime(settings)
    synthesizer = CitationSynthesizer(
        llm=runtime.llm, min_dense_score=runtime.settings.retrieval.min_dense_score, streaming=streaming
    )
    return DocsQueryEngine(retriever=build_retriever(runtime, sources), response_synthesizer=synthesizer)


def build_ingestor(runtime: Runtime):
    from app.ingestion import Ingestor

    return Ingestor(runtime.settings, runtime.embed_model, runtime.vector_store)
