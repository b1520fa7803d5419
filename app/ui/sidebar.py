"""The sidebar: active profile and backends, document library and filter, uploads and re-indexing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.composition import Runtime
from app.store import is_lite_uri
from app.ui.library import IngestOutcome, documents, first_start_folders, ingest_folders, known_folders, library_rows
from app.ui.render import escape
from app.ui.runtime import ingest_lock
from app.ui.uploads import UploadRejected, allowed_types, store_upload, uploads_dir
from settings import Settings

NO_RERANK = (
    "Offline reranking is not available: no cross-encoder model ships with docsrag, so passages keep the hybrid "
    "(dense + BM25) order. Set rerank.backend to hf_api to rerank with the Hugging Face API, or to local with "
    "rerank.model_dir pointing at a cross-encoder's ONNX export."
)


@dataclass
class Choices:
    sources: list[str] | None
    streaming: bool
    has_documents: bool


ALERTS = {
    "latency": "answers are slower than budget.alert_latency_s",
    "error_rate": "the API error rate is above budget.alert_error_rate",
    "spend": "this month's spend passed budget.alert_spend_usd",
}


def backend_lines(settings: Settings) -> list[str]:
    """The active profile and backends, one '**what:** value' Markdown line each."""
    chain = [f"{b} ({settings.llm.hf_models[0]}…)" if b == "hf_api" and settings.llm.hf_models else b for b in settings.llm.chain]
    uri = settings.storage.milvus_uri()
    rerank = settings.rerank
    rows = {
        "Profile": f"{settings.profile} ({settings.profile_reason})",
        "Answers": " → ".join([*chain, "extractive quotes"]) if chain else "extractive quotes (no LLM configured)",
        "Embeddings": f"{settings.embedding.backend} · {settings.embedding.model}",
        "Reranking": "none" if rerank.backend == "none" else f"{rerank.backend} · {rerank.model}",
        "Index": f"Milvus Lite in {settings.storage.index_dir}" if is_lite_uri(uri) else f"Milvus server {uri}",
    }
    return [f"**{label}:** {escape(value)}" for label, value in rows.items()]


def _usage(meter, settings: Settings) -> None:
    """This month's metered API spend against the cap (profiles that call the HF API)."""
    spent, state, alerts = meter.month_spend(), meter.state(), meter.active_alerts()
    cap = settings.budget.monthly_cap_usd
    st.progress(min(spent / cap, 1.0) if cap else 1.0, text=escape(f"API usage this month: ${spent:.2f} of ${cap:.2f} ({state})"))
    for alert in alerts:
        st.warning(f"Usage alert: {escape(ALERTS.get(alert, alert))}")


def _backends(runtime: Runtime) -> None:
    settings = runtime.settings
    st.subheader("Backends")
    st.markdown("  \n".join(backend_lines(settings)))
    if settings.rerank.backend == "none":
        st.caption(NO_RERANK)
    if runtime.meter is not None:  # the runtime's own meter: it exists exactly when a backend is a paid API
        _usage(runtime.meter, settings)


def _show_outcome(outcome: IngestOutcome) -> None:
    for summary in outcome.summaries:
        st.success(escape(summary))
    for source, reason in outcome.skipped:
        st.warning(f"Skipped {escape(source)}: {escape(reason)}")
    for message in outcome.rejected + outcome.errors:
        st.error(escape(message))


def _ingest(runtime: Runtime, folders: list[Path], outcome: IngestOutcome) -> None:
    lock = ingest_lock(runtime.settings.storage.milvus_uri())
    if not lock.acquire(blocking=False):
        outcome.errors.append("Another ingestion of this index is running; try again when it has finished.")
        return
    try:
        bar = st.progress(0.0, text="Reading files…")

        def progress(folder: str, done: int, total: int, current: str) -> None:
            bar.progress(done / total if total else 1.0, text=f"{Path(folder).name}: {done}/{total} files · {current}")

        ingest_folders(runtime, folders, progress, outcome)
        bar.progress(1.0, text="Index up to date")
    finally:
        lock.release()


def _add_documents(runtime: Runtime, folders: list[Path]) -> None:
    settings = runtime.settings
    st.subheader("Add documents")
    round_ = st.session_state.setdefault("upload_round", 0)
    files = st.file_uploader(
        "Upload files",
        type=allowed_types(),
        accept_multiple_files=True,
        key=f"uploads-{round_}",
        max_upload_size=max(1, math.ceil(settings.ingestion.max_file_mb)),
        help=f"PDF, Markdown, HTML, reST, text or code, up to {settings.ingestion.max_file_mb:g} MB each; "
        f"stored in {uploads_dir(settings)}",
    )
    add = st.button("Add to index", type="primary", disabled=not files)
    reindex = st.button(
        "Re-index folders", disabled=not folders, help="Ingest every folder of the library again; only changed files are read."
    )
    if add:
        outcome = IngestOutcome()
        stored = 0
        for upload in files or []:
            try:
                store_upload(settings, upload.name, upload.getvalue())
                stored += 1
            except UploadRejected as exc:
                outcome.rejected.append(str(exc))
        if stored:
            _ingest(runtime, [uploads_dir(settings).resolve()], outcome)
        st.session_state.ingest_outcome = outcome
        st.session_state.upload_round = round_ + 1  # a fresh uploader: the files were handled
    elif reindex:
        outcome = IngestOutcome()
        _ingest(runtime, folders, outcome)
        st.session_state.ingest_outcome = outcome
    if "ingest_outcome" in st.session_state:
        _show_outcome(st.session_state.ingest_outcome)


def ingest_on_first_start(runtime: Runtime) -> bool:
    """On an empty index, ingest ``ingestion.startup_folders`` with visible progress; True when something ran."""
    folders = first_start_folders(runtime.settings, documents(runtime.settings))
    if not folders:
        return False
    st.info(f"First start: indexing {', '.join(escape(f.name) for f in folders)}. This happens once.", icon="📥")
    outcome = IngestOutcome()
    _ingest(runtime, folders, outcome)
    st.session_state.ingest_outcome = outcome
    return True


def render_sidebar(runtime: Runtime) -> Choices:
    settings = runtime.settings
    with st.sidebar:
        st.title("docsrag")
        _backends(runtime)
        library = st.container()
        _add_documents(runtime, known_folders(settings, documents(settings)))
        records = documents(settings)  # after any ingestion above
        with library:
            st.subheader("Documents")
            if records:
                st.dataframe(library_rows(records), hide_index=True)
                st.caption(f"{len(records)} files · {sum(r.chunks for r in records)} chunks")
                selected = st.multiselect("Search only in", [r.source for r in records], placeholder="all documents")
            else:
                st.caption("No documents yet.")
                selected = []
        st.subheader("Options")
        streaming = st.toggle("Stream answers", value=True)
    return Choices(sources=selected or None, streaming=streaming, has_documents=bool(records))
