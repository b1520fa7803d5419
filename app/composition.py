"""The composition root: settings in, embedders, stores and engines out.

The UI, the CLI and notebooks call only these functions; nothing else picks
concrete classes. LLMs and embedders are always passed explicitly (LlamaIndex's
global Settings would default to OpenAI).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from settings import Settings, load_settings

if TYPE_CHECKING:  # imported where used: a process loads only the backends its settings name (and `usage` no LlamaIndex)
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.llms import LLM
    from llama_index.core.postprocessor.types import BaseNodePostprocessor

    from app.question_log import QuestionLog
    from integrations.adapters.milvus_store import MilvusStore
    from integrations.usage_meter import UsageMeter

logger = logging.getLogger(__name__)

#: Third-party loggers kept out of the user's terminal and page below ERROR (their failures reach the user as ours).
NOISY_LOGGERS = ("milvus_lite", "httpx", "httpx2")


def quiet_noisy_loggers() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # pymilvus (its children follow it) logs every failed call with a traceback at ERROR and resets its level when
    # imported (MilvusStore calls this again then); -v keeps its logs.
    logging.getLogger("pymilvus").setLevel(logging.DEBUG if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.CRITICAL)


HF_TOKEN_HINT = "set HF_TOKEN (or HUGGINGFACE_API_TOKEN) to a Hugging Face token, or choose a profile without hf_api (e.g. --profile local)"


def _hf_token(settings: Settings, what: str):
    """The HF token for a component that uses the HF API; fails at start-up, naming the variable, without one."""
    token = settings.hf_token
    if token is None or not token.get_secret_value().strip():
        raise ValueError(f"{what} uses the Hugging Face API (profile {settings.profile!r}) but no token is set: {HF_TOKEN_HINT}")
    return token


def _hf(settings: Settings, what: str) -> dict:
    """What every Hugging Face component is built with: the token (required) and the router's base URL."""
    return {"token": _hf_token(settings, what), "base_url": settings.hf_base_url}


def uses_hf_api(settings: Settings) -> bool:
    return "hf_api" in (settings.embedding.backend, settings.rerank.backend, *settings.llm.chain)


def check_credentials(settings: Settings) -> None:
    """Fail before anything is opened or created when the profile needs a token that is not set (naming the variable)."""
    if uses_hf_api(settings):
        _hf_token(settings, "this profile")


def build_embed_model(settings: Settings, meter: UsageMeter | None = None) -> BaseEmbedding:
    emb = settings.embedding
    if emb.backend == "local":
        from integrations.adapters.local_embedding import LocalMiniLMEmbedding

        return LocalMiniLMEmbedding(onnx_batch_size=emb.batch_size, threads=emb.threads, max_tokens=emb.max_tokens)
    if emb.backend == "hf_api":
        from integrations.adapters.hf_embedding import HFEmbedding

        cache_path = None
        if emb.cache:
            cache_path = emb.cache_path or str(settings.storage.index_dir / "hf_embedding_cache.sqlite")
        return HFEmbedding(
            **_hf(settings, "embedding.backend=hf_api"),
            model_name=emb.model,
            dimension=emb.dimension,
            timeout=emb.timeout_s,
            embed_batch_size=emb.batch_size,
            cache_path=cache_path,
            meter=meter,
        )
    raise ValueError(f"embedding.backend={emb.backend!r} is not supported; use 'local' or 'hf_api'")


def build_chain_members(settings: Settings, meter: UsageMeter | None = None) -> list[LLM]:
    """The configured answer backends in order."""
    llm = settings.llm
    members: list[LLM] = []
    for backend in llm.chain:
        if backend == "hf_api":
            from integrations.adapters.hf_chat_llm import HFChatLLM
            from integrations.metered_llm import MeteredLLM

            hf = _hf(settings, "llm.chain with hf_api")
            cheapest = meter.cheapest(llm.hf_models) if meter is not None and llm.hf_models else None
            for model in llm.hf_models:
                member = HFChatLLM(
                    **hf,
                    model_name=model,
                    timeout=llm.timeout_s,
                    temperature=llm.temperature,
                    num_output=llm.max_tokens,
                    context_window=llm.context_window,
                    deadline_s=llm.deadline_s,
                )
                if meter is not None:
                    member = MeteredLLM(member, meter, provider=member.provider_name, cheapest_model=cheapest)
                members.append(member)
        elif backend == "ollama":
            from integrations.adapters.ollama_llm import OllamaLLM

            # base_url and context_window explicit: the class ignores OLLAMA_HOST and would call /api/show on every
            # metadata access without a context window.
            members.append(
                OllamaLLM(
                    model=llm.ollama_model,
                    base_url=llm.ollama_base_url,
                    context_window=llm.context_window,
                    request_timeout=llm.timeout_s,
                    load_allowance_s=llm.ollama_load_allowance_s,
                    keep_alive=llm.ollama_keep_alive,
                    temperature=llm.temperature,
                    additional_kwargs={"num_predict": llm.max_tokens},
                    is_function_calling_model=False,
                )
            )
        elif backend == "local":
            from integrations.adapters.local_llm import EXTRA_HINT, LocalGGUFLLM, llama_cpp_available, resolve_gguf

            if not llama_cpp_available():
                raise ValueError(f"llm.chain includes 'local' but llama-cpp-python is not installed: {EXTRA_HINT}")
            members.append(
                LocalGGUFLLM(
                    model_path=str(resolve_gguf(llm.gguf_path)),
                    n_threads=llm.n_threads,
                    context_window=llm.context_window,
                    max_tokens=llm.max_tokens,
                    temperature=llm.temperature,
                )
            )
        else:
            raise ValueError(f"llm.chain entry {backend!r} is not supported; use hf_api, ollama or local")
    return members


def build_llm(settings: Settings, meter: UsageMeter | None = None) -> LLM | None:
    """The configured LLM chain, or None without one (the citation synthesizer then quotes the sources)."""
    members = build_chain_members(settings, meter)
    if not members:
        return None
    from integrations.fallback_llm import FallbackLLM

    return FallbackLLM(
        members=members,
        deadline_s=settings.llm.deadline_s,
        context_window=settings.llm.context_window,
        num_output=settings.llm.max_tokens,
    )


def build_reranker(settings: Settings, meter: UsageMeter | None = None) -> BaseNodePostprocessor | None:
    """The cross-encoder reranker, or None when rerank.backend is 'none'."""
    rr = settings.rerank
    if rr.backend == "none":
        return None
    if rr.backend == "hf_api":
        from integrations.adapters.hf_rerank import HFCrossEncoderRerank

        return HFCrossEncoderRerank(
            **_hf(settings, "rerank.backend=hf_api"),
            model=rr.model,
            top_n=settings.retrieval.top_k,
            max_candidates=rr.max_candidates,
            timeout_s=rr.timeout_s,
            meter=meter,
        )
    if rr.backend == "local":
        from integrations.adapters.local_rerank import LocalCrossEncoderRerank

        if rr.model_dir is None:
            raise ValueError("rerank.backend=local needs rerank.model_dir (DOCSRAG_RERANK__MODEL_DIR): a cross-encoder's ONNX directory")
        return LocalCrossEncoderRerank(
            model=rr.model,
            model_dir=rr.model_dir,
            top_n=settings.retrieval.top_k,
            max_candidates=rr.max_candidates,
            threads=settings.embedding.threads,
        )
    raise ValueError(f"rerank.backend={rr.backend!r} is not supported; use 'none', 'hf_api' or 'local'")


@dataclass
class Runtime:
    """What a process opens once and shares between questions: settings, models, store, usage meter."""

    settings: Settings
    embed_model: BaseEmbedding
    store: MilvusStore
    llm: LLM | None  # None: answers quote the sources
    reranker: BaseNodePostprocessor | None = None
    meter: UsageMeter | None = None  # when any backend is a paid API
    question_log: QuestionLog | None = None  # None: feedback.log_questions is off
    reader_of: Settings | None = None  # reading through a running ingest's store: the settings to open it by afterwards

    def stale(self) -> bool:
        """Whether this runtime read through an ingest's store that has since stopped: open the runtime again (the
        index is then opened as usual)."""
        from integrations.adapters.milvus_store import ingest_store

        return self.reader_of is not None and ingest_store(self.reader_of) != self.settings.storage.uri

    def close(self) -> None:
        """Close the store (and stop the embedded Milvus Lite server): the index can then be opened by another process."""
        if self.question_log is not None:
            self.question_log.close()
        self.store.close()


def open_runtime(settings: Settings | None = None, *, reader: bool = False) -> Runtime:
    """Open the models and the store. A ``reader`` (a process that only asks questions) of an embedded index that a
    running ingest has open reads it through that ingest's store (milvus_store.ingest_store) instead of being refused."""
    from integrations.adapters.milvus_store import MilvusStore, claim_index, ingest_store, release_lite_store, start_lite_server

    settings = settings or load_settings()
    check_credentials(settings)
    reader_of = None
    if reader and (socket := ingest_store(settings)):
        reader_of, settings = settings, settings.model_copy(update={"storage": settings.storage.model_copy(update={"uri": socket})})
        logger.info("an ingest is writing the index in %s: reading it through %s", settings.storage.index_dir, socket)
    claim_index(settings)  # a locked or outdated index is refused before any model loads
    meter = open_meter(settings) if uses_hf_api(settings) else None
    start_lite_server(settings)  # starts while the models below load
    try:
        embed_model = build_embed_model(settings, meter)
        if settings.embedding.backend == "local":
            # A local model's load briefly needs more memory than it keeps: done before the store client opens, the
            # client reuses that memory instead of adding to the peak.
            embed_model.load()
        llm, reranker = build_llm(settings, meter), build_reranker(settings, meter)
        store = MilvusStore(settings, embed_model.dimension)  # each embedder declares its vectors' length
    except BaseException as exc:
        release_lite_store(settings)
        if reader_of is not None and isinstance(exc, Exception) and ingest_store(reader_of) is None:
            return open_runtime(reader_of, reader=True)  # the ingest ended meanwhile: the index is free to open
        raise
    return Runtime(
        settings=settings,
        embed_model=embed_model,
        store=store,
        llm=llm,
        reranker=reranker,
        meter=meter,
        question_log=open_question_log(settings),
        reader_of=reader_of,
    )


def build_retriever(runtime: Runtime, sources: list[str] | None = None, top_k: int | None = None):
    """The hybrid retriever; ``sources`` (names as the document library shows them) restricts it to those files."""
    from app.committed_retriever import CommittedRetriever
    from app.manifest import file_ids_named
    from integrations.hybrid_retriever import MilvusHybridRetriever

    r = runtime.settings.retrieval
    hybrid = MilvusHybridRetriever(
        store=runtime.store,
        embed_model=runtime.embed_model,
        top_k=top_k or r.top_k,
        dense_top_k=max(r.dense_top_k, top_k or 0),
        sparse_top_k=max(r.sparse_top_k, top_k or 0),
        rrf_k=r.rrf_k,
        dense_weight=r.dense_weight,
        sparse_weight=r.sparse_weight,
        file_ids=file_ids_named(runtime.settings.storage.index_dir, sources) if sources else None,
    )
    return CommittedRetriever(hybrid, runtime.settings.storage.index_dir, runtime.store)


def build_ranking_stages(runtime: Runtime, top_n: int | None = None) -> tuple[int, list]:
    """(candidates to retrieve, node postprocessors that pick ``top_n`` of them): the cross-encoder, else the meaning stage."""
    top_n = top_n or runtime.settings.retrieval.top_k
    if runtime.reranker is not None:
        return max(runtime.settings.rerank.max_candidates, top_n), [runtime.reranker]
    r = runtime.settings.retrieval
    if r.meaning_weight <= 0:
        return top_n, []
    from integrations.meaning_rerank import MeaningRerank

    stage = MeaningRerank(runtime.store, runtime.embed_model, top_n=top_n, weight=r.meaning_weight, rrf_k=r.rrf_k)
    return max(r.meaning_candidates, top_n), [stage]


def empty_index_message(settings: Settings) -> str | None:
    """One line saying how to fill the index when it holds no document (None when it does); opens and creates nothing."""
    from app.manifest import indexed_files
    from integrations.adapters.milvus_store import check_lite_format, embedded_file, held_elsewhere

    index_dir = settings.storage.index_dir
    if not index_dir.exists():
        return f"No index at {index_dir}: ingest your documents first with `python -m app ingest PATH` (add `--index {index_dir}`)."
    if not index_dir.is_dir():
        return f"The index folder {index_dir} is a file, not a folder: point --index (DOCSRAG_STORAGE__INDEX_DIR) at a folder."
    # An index this version cannot read says so (and what to do) before anything says it is empty: the Milvus Lite
    # format here, an old manifest when indexed_files opens it.
    if db_file := embedded_file(settings.storage.milvus_uri()):
        check_lite_format(db_file)
        if held_elsewhere(db_file):
            return None  # an ingest may be filling it: opening it says which process has it
    if indexed_files(index_dir) == 0:
        return f"The index at {index_dir} has no documents yet: ingest some with `python -m app ingest PATH` (add `--index {index_dir}`)."
    return None


def build_query_engine(
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    sources: list[str] | None = None,
    streaming: bool = False,
    log_questions: bool = True,
):
    """A LlamaIndex query engine over the index named by the settings.

    ``sources`` restricts retrieval to these files (names as the document library shows them). Its questions go to the
    runtime's question log unless ``log_questions`` is False (evaluation runs). Over an index that holds no document
    (or none at all) every question is answered with the one line that says how to fill it, and nothing is created.
    """
    from app.query_engine import EmptyIndexQueryEngine

    if runtime is None:
        settings = settings or load_settings()
        check_credentials(settings)
        if message := empty_index_message(settings):
            return EmptyIndexQueryEngine(message=message)
        runtime = open_runtime(settings, reader=True)
    return build_query_engines(runtime, sources, (streaming,), log_questions)[0]


def build_query_engines(runtime: Runtime, sources: list[str] | None = None, streaming=(False, True), log_questions: bool = True) -> list:
    """One query engine per entry of ``streaming``, sharing retriever and node postprocessors; each synthesizer streams or
    not for good (a chat engine takes one of each)."""
    from app.query_engine import DocsQueryEngine
    from integrations.citation_synthesizer import CitationSynthesizer, default_answerers
    from integrations.evidence_filter import WeakEvidenceFilter
    from integrations.extractive_answer import ExtractiveAnswerer

    retrieval = runtime.settings.retrieval
    # Quoting must not depend on a remote API: with an API embedder it scores sentences by keywords.
    local = runtime.settings.embedding.backend == "local"
    evidence = WeakEvidenceFilter(
        min_dense_score=retrieval.min_dense_score, min_dense_score_missing_names=retrieval.min_dense_score_missing_names
    )
    answerers = default_answerers(runtime.llm, ExtractiveAnswerer(embed_model=runtime.embed_model if local else None))
    # The ranking stage picks top_k out of more candidates, after the refusal check (no call to refuse).
    candidates, stages = build_ranking_stages(runtime)
    retriever = build_retriever(runtime, sources, top_k=candidates)
    return [
        DocsQueryEngine(
            retriever=retriever,
            response_synthesizer=CitationSynthesizer(answerers, streaming=streams, evidence=evidence),
            node_postprocessors=[evidence, *stages],
            meter=runtime.meter,
            max_question_chars=retrieval.max_question_chars,
            question_log=runtime.question_log if log_questions else None,
            filtered=bool(sources),
        )
        for streams in streaming
    ]


def open_meter(settings: Settings) -> UsageMeter:
    """The usage meter of this index (SQLite beside it), with the budget settings."""
    from integrations.usage_meter import UsageMeter

    settings.storage.index_dir.mkdir(parents=True, exist_ok=True)
    return UsageMeter(settings.storage.index_dir / "usage.sqlite", settings.budget)


def open_question_log(settings: Settings) -> QuestionLog | None:
    """The question log beside the index (app/question_log.py), or None when feedback.log_questions is off."""
    if not settings.feedback.log_questions:
        return None
    from app.question_log import QuestionLog

    secrets = tuple(s.get_secret_value() for s in (settings.hf_token, settings.storage.token) if s is not None)
    return QuestionLog.beside(settings.storage.index_dir, secrets)


def build_ingestor(runtime: Runtime):
    from app.ingestion import Ingestor

    return Ingestor(runtime.settings, runtime.embed_model, runtime.store)
