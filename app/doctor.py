"""`python -m app doctor`: one real, timed call per part of the active profile (docs/deployment.md); any failure exits 1."""

from __future__ import annotations

import os
import shlex
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import numpy as np

from settings import Settings

OK, FAILED, UNREACHABLE, SKIPPED = "ok", "FAILED", "unreachable", "skipped"
HUB_ENDPOINT = "https://huggingface.co"
PROBE = "How do I configure the request timeout?"


@dataclass
class Check:
    name: str
    result: str
    detail: str
    seconds: float
    fix: str = ""

    @property
    def failed(self) -> bool:
        return self.result in (FAILED, UNREACHABLE)


class CheckFailed(Exception):
    """A check's own verdict: the service answered, but not what the deployment needs."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.fix = fix


def _unreachable(exc: BaseException) -> bool:
    import httpx
    import httpx2

    # Offline mode (OfflineModeIsEnabled) is a ConnectionError; HF timeouts are TimeoutErrors.
    return isinstance(exc, ConnectionError | TimeoutError | httpx.TransportError | httpx2.TransportError)


def _run(name: str, fix: str, probe: Callable[[], str], secrets: tuple[str, ...] = ()) -> Check:
    """Run one probe into its row; every text of the row passes the token redaction, whatever raised it."""
    from integrations.backend_errors import describe_failure
    from integrations.redaction import redact, redacted_errors

    started = time.perf_counter()
    try:
        with redacted_errors(*secrets):
            detail = probe()
    except CheckFailed as exc:
        check = Check(name, FAILED, str(exc), 0.0, exc.fix)
    except Exception as exc:  # noqa: BLE001 - every failure of a probe is reported in its row
        check = Check(name, UNREACHABLE if _unreachable(exc) else FAILED, describe_failure(exc), 0.0, fix)
    else:
        check = Check(name, OK, detail, 0.0)
    check.seconds = time.perf_counter() - started
    check.detail, check.fix = redact(check.detail, secrets), redact(check.fix, secrets)
    return check


def _hub(settings: Settings):
    from huggingface_hub import HfApi

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    # The Hub API (whoami, model info) lives beside the router; HF_ENDPOINT points it elsewhere, as in huggingface_hub.
    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or HUB_ENDPOINT, token=token or False)


def _token_check(settings: Settings) -> str:
    if settings.hf_token is None or not settings.hf_token.get_secret_value().strip():
        raise CheckFailed("no token", "set HF_TOKEN (or HUGGINGFACE_API_TOKEN) to a token that may call Inference Providers")
    return f"valid, user {_hub(settings).whoami()['name']}"


def _mapping_check(settings: Settings, model: str) -> str:
    repo, _, wanted = model.partition(":")
    info = _hub(settings).model_info(repo, expand=["inferenceProviderMapping"])
    live = [m.provider for m in info.inference_provider_mapping or [] if m.status == "live" and m.task == "conversational"]
    if wanted not in ("", "fastest", "cheapest"):
        live = [p for p in live if p == wanted]
    if not live:
        raise CheckFailed(
            f"no live chat provider{f' {wanted!r}' if wanted else ''}",
            "pick a model whose Hub page lists Inference Providers for chat (docs/deployment.md), and set llm.hf_models",
        )
    return "providers: " + ", ".join(live)


def _completion_check(member) -> str:
    from llama_index.core.base.llms.types import ChatMessage

    reply = member.chat([ChatMessage(role="user", content="Say OK.")], max_tokens=1)
    if not (reply.message.content or "").strip():
        raise CheckFailed("empty reply", "try another model in llm.hf_models")
    return "1-token completion answered"


def _ollama_check(member) -> str:
    import ollama

    try:
        ollama.Client(host=member.base_url, timeout=member.request_timeout).show(member.model)
    except ollama.ResponseError as exc:
        if exc.status_code == 404:
            raise CheckFailed(f"model {member.model} is not pulled", f"run `ollama pull {member.model}` on the Ollama host") from exc
        raise
    return f"{member.model} is pulled"


def _embedding_check(embed_model) -> str:
    dim = embed_model.dimension
    vector = embed_model.get_text_embedding(PROBE)
    if len(vector) != dim:
        raise CheckFailed(f"{len(vector)}-d vectors, embedding.dimension says {dim}-d", "set embedding.dimension to the model's")
    return f"{dim}-d vector"


def _rerank_check(reranker) -> str:
    from llama_index.core.schema import NodeWithScore, TextNode

    texts = ["The request timeout is set with --timeout.", *[f"Unrelated passage {i}." for i in range(reranker.top_n)]]
    nodes = [NodeWithScore(node=TextNode(text=t), score=0.0) for t in reversed(texts)]
    from integrations.question_context import question_context

    with question_context() as context:
        out = reranker.postprocess_nodes(nodes, query_str=PROBE)
    if context.notices:
        raise CheckFailed(context.notices[0], "check rerank.model is a text-ranking model the router serves, or set rerank.backend")
    if "--timeout" not in out[0].node.get_content():
        raise CheckFailed("the matching passage was not ranked first", "check rerank.model")
    return f"{len(texts)} passages scored"


def _index_check(settings: Settings, embed_model) -> str:
    from llama_index.core.schema import MetadataMode

    from integrations.adapters.milvus_store import DENSE_FIELD, NODE_FIELDS, MilvusStore, hit_node

    with closing(MilvusStore(settings, embed_model.dimension)) as store:
        _check_against_manifest(settings, store)
        rows = store.rows([DENSE_FIELD, *NODE_FIELDS], limit=1)
        if not rows:
            return "opens (empty: ingest a folder)"
        node = hit_node(rows[0])  # the store keeps the text in its own field
        stored = np.asarray(rows[0][DENSE_FIELD])
        fresh = np.asarray(embed_model.get_text_embedding(node.get_content(metadata_mode=MetadataMode.EMBED)))
        cosine = float(stored @ fresh / (np.linalg.norm(stored) * np.linalg.norm(fresh) or 1.0))
        if cosine < 0.99:
            raise CheckFailed(
                f"a stored chunk re-embeds at cosine {cosine:.3f}: the index was built with another embedding model",
                "re-ingest with this profile, or use the embedding settings the index was built with",
            )
        return f"opens; a stored chunk re-embeds at cosine {cosine:.4f}"


def _check_against_manifest(settings: Settings, store) -> None:
    from app.index_health import check_store
    from app.manifest import Manifest, state_file

    if not state_file(settings.storage.index_dir).is_file():
        return
    with closing(Manifest(state_file(settings.storage.index_dir), read_only=True)) as manifest:
        health = check_store(store, manifest.all())
    if health.missing:
        roots = sorted({record.root for record in health.missing})
        raise CheckFailed(
            health.message(),
            "ingest the folder(s) again, which re-ingests exactly those files: "
            + "; ".join(f"python -m app ingest {shlex.quote(r)}" for r in roots),
        )


def run_checks(settings: Settings) -> list[Check]:
    from app.composition import build_chain_members, build_embed_model, build_reranker, open_meter, uses_hf_api
    from integrations.adapters.hf_chat_llm import HFChatLLM
    from integrations.adapters.ollama_llm import OllamaLLM
    from integrations.metered_llm import MeteredLLM

    checks: list[Check] = []
    secrets = (settings.hf_token.get_secret_value(),) if settings.hf_token else ()

    def run(name: str, fix: str, probe: Callable[[], str]) -> Check:
        return _run(name, fix, probe, secrets)

    token_fix = "set HF_TOKEN (or HUGGINGFACE_API_TOKEN) to a valid token"
    if uses_hf_api(settings):
        checks.append(run("token", token_fix, lambda: _token_check(settings)))
    # Its calls are paid like any other: metered, and refused at the cap.
    meter = open_meter(settings) if uses_hf_api(settings) and settings.hf_token else None
    try:
        members = build_chain_members(settings, meter)
        # No embedding cache: every check must reach the service, and a cached vector would hide another model's.
        no_cache = settings.model_copy(update={"embedding": settings.embedding.model_copy(update={"cache": False})})
        embed_model = build_embed_model(no_cache, meter)
        reranker = build_reranker(settings, meter)
    except ValueError as exc:
        if meter is not None:
            meter.close()
        return [*checks, Check("configuration", FAILED, str(exc), 0.0, "fix the setting named above")]
    for member in members:
        if isinstance(member.llm if isinstance(member, MeteredLLM) else member, HFChatLLM):
            fix = f"check that {member.model_name} is served for chat (docs/deployment.md)"
            checks.append(run(f"chat {member.model_name}: providers", fix, lambda m=member: _mapping_check(settings, m.model_name)))
            checks.append(run(f"chat {member.model_name}: completion", fix, lambda m=member: _completion_check(m)))
        elif isinstance(member, OllamaLLM):
            fix = f"start Ollama at {member.base_url} (llm.ollama_base_url)"
            checks.append(run(f"ollama {member.model}", fix, lambda m=member: _ollama_check(m)))
        else:
            checks.append(Check(f"{member.class_name()}", OK, "local model file found", 0.0))
    kind = settings.embedding.backend
    checks.append(run(f"embedding ({kind})", "check embedding.model and the token", lambda: _embedding_check(embed_model)))
    if reranker is not None:
        checks.append(run(f"rerank ({settings.rerank.backend})", "check rerank.model", lambda: _rerank_check(reranker)))
    index_fix = f"check storage.index_dir ({settings.storage.index_dir}) or storage.uri"
    checks.append(run("index", index_fix, lambda: _index_check(settings, embed_model)))
    if meter is not None:
        meter.close()
    return checks


def format_table(checks: list[Check]) -> str:
    rows = [("check", "result", "time", "detail / fix")]
    for c in checks:
        rows.append((c.name, c.result, f"{c.seconds * 1000:.0f} ms", c.detail + (f" -> fix: {c.fix}" if c.failed and c.fix else "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}" for r in rows)
