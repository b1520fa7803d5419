"""The sidebar: active profile and backends, document library and filter, uploads and re-indexing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from app.composition import Runtime
from app.ingest_progress import IngestProgress
from app.ui.conversation import FILTER_KEY
from app.ui.ingest_job import IngestJob, busy_message, ingest_slot
from app.ui.library import IngestOutcome, documents, first_start_folders, known_folders, library_rows
from app.ui.safe_markdown import escape
from app.ui.upload_limits import bound_uploads, release_session_uploads
from app.ui.uploads import UploadRejected, allowed_types, store_upload, uploads_dir
from integrations.adapters.milvus_store import embedded_file
from integrations.usage_meter import usd
from settings import Settings

POLL_S = 0.5
NO_RERANK = (
    "Offline reranking is not available: no cross-encoder model ships with docsrag, so passages keep the hybrid "
    "(dense + BM25) order. Set rerank.backend to hf_api to rerank with the Hugging Face API, or to local with "
    "rerank.model_dir pointing at a cross-encoder's ONNX export."
)


GAPS_VIEW = "Documentation gaps"
VIEWS = ("Ask", GAPS_VIEW)


@dataclass
class Choices:
    sources: list[str] | None
    streaming: bool
    has_documents: bool
    ingest_bar: object = None  # this session's running ingestion, followed at the end of the run
    view: str = "Ask"  # or GAPS_VIEW


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
        "Index": f"Milvus Lite in {settings.storage.index_dir}" if embedded_file(uri) else f"Milvus server {uri}",
    }
    return [f"**{label}:** {escape(value)}" for label, value in rows.items()]


def _usage(meter, settings: Settings) -> None:
    """This month's metered API spend against the cap (profiles that call the HF API)."""
    spent, state, alerts = meter.month_spend(), meter.state(), meter.active_alerts()
    cap = settings.budget.monthly_cap_usd
    st.progress(min(spent / cap, 1.0) if cap else 1.0, text=escape(f"API usage this month: {usd(spent)} of {usd(cap)} ({state})"))
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
    for note in outcome.notes:
        st.info(escape(note))
    for source, reason in outcome.skipped:
        st.warning(f"Skipped {escape(source)}: {escape(reason)}")
    for message in outcome.rejected + outcome.errors:
        st.error(escape(message))


def _start(runtime: Runtime, job: IngestJob) -> bool:
    """Start ``job`` for this session; False when another one is running (the sidebar then says when it ends)."""
    if ingest_slot(runtime.settings.storage.milvus_uri()).start(runtime, job) is not None:
        return False
    st.session_state.ingest_job = job
    st.session_state.pop("ingest_outcome", None)
    return True


def _store_uploads(runtime: Runtime, files) -> None:
    """Store the uploads and start ingesting them; the uploader is emptied once they are handled."""
    settings = runtime.settings
    if ingest_slot(settings.storage.milvus_uri()).running() is not None:
        return  # nothing is stored: the files stay in the uploader, and the sidebar says when the running ingestion ends
    outcome, stored = IngestOutcome(), []
    for upload in files:
        try:
            stored.append(store_upload(settings, upload.name, upload.getvalue()))
        except UploadRejected as exc:
            outcome.rejected.append(str(exc))
    job = IngestJob([uploads_dir(settings).resolve()], IngestProgress.for_settings(settings.ingestion), outcome, uploads=stored)
    if not stored:
        st.session_state.ingest_outcome = outcome
    elif not _start(runtime, job):
        for path in stored:  # another session started first: keep nothing of this round
            path.unlink(missing_ok=True)
        return
    release_session_uploads()  # written to uploads/: their bytes leave memory
    st.session_state.upload_round += 1  # a fresh uploader: the files were handled


def _uploader(settings: Settings, round_: int):
    limits = settings.ingestion
    bound_uploads(limits.upload_max_files, limits.upload_session_mb, limits.upload_total_mb)
    # No type=: Streamlit would then check every name before the page runs and fail the whole page on one with a
    # NUL byte; store_upload checks names and types and says why it refuses one.
    return st.file_uploader(
        "Upload files",
        accept_multiple_files=True,
        key=f"uploads-{round_}",
        max_upload_size=max(1, math.ceil(settings.ingestion.max_file_mb)),
        help=f"PDF, Markdown, HTML, reST, text or code ({', '.join(allowed_types())}), up to {settings.ingestion.max_file_mb:g} MB each; "
        f"stored in {uploads_dir(settings)}",
    )


def _add_documents(runtime: Runtime, folders: list[Path]):
    """The upload and re-index controls; returns the progress bar of this session's running ingestion, if any."""
    settings = runtime.settings
    st.subheader("Add documents")
    round_ = st.session_state.setdefault("upload_round", 0)
    files = _uploader(settings, round_)
    add = st.button("Add to index", type="primary", disabled=not files)
    reindex = st.button(
        "Re-index folders", disabled=not folders, help="Ingest every folder of the library again; only changed files are read."
    )
    if add:
        _store_uploads(runtime, files or [])
        st.rerun()
    if reindex:
        _start(runtime, IngestJob(folders, IngestProgress.for_settings(settings.ingestion), IngestOutcome()))
        st.rerun()
    job: IngestJob | None = st.session_state.get("ingest_job")
    if job is not None:
        return st.progress(job.progress.fraction(), text=escape(job.status()))
    other = ingest_slot(settings.storage.milvus_uri()).running()
    if other is not None:
        st.info(escape(busy_message(other)), icon="⏳")
    if "ingest_outcome" in st.session_state:
        _show_outcome(st.session_state.ingest_outcome)
    return None


def _follow(job: IngestJob, bar) -> None:
    while not job.done.wait(POLL_S):
        bar.progress(job.progress.fraction(), text=escape(job.status()))


def follow_ingestion(bar) -> None:
    """Update this session's progress bar until its ingestion ends, then show the outcome (at the end of a run, so
    a question asked meanwhile is answered first)."""
    job: IngestJob | None = st.session_state.get("ingest_job")
    if job is None or bar is None:
        return
    _follow(job, bar)
    st.session_state.ingest_outcome = job.outcome
    del st.session_state["ingest_job"]
    st.rerun()


def ingest_on_first_start(runtime: Runtime) -> bool:
    """On an empty index, ingest ``ingestion.startup_folders`` with visible progress; True when something ran.
    A visitor arriving while another session does it watches that ingestion instead."""
    settings = runtime.settings
    folders = first_start_folders(settings, documents(settings))
    if not folders:
        return False
    st.info(f"First start: indexing {', '.join(escape(f.name) for f in folders)}. This happens once.", icon="📥")
    job = IngestJob(folders, IngestProgress.for_settings(settings.ingestion), IngestOutcome())
    job = ingest_slot(settings.storage.milvus_uri()).start(runtime, job) or job
    _follow(job, st.progress(0.0, text="Reading files…"))
    st.session_state.ingest_outcome = job.outcome
    return True


LIBRARY_COLUMNS = {  # the sidebar is ~250 px wide: counts and dates get what "Dec 16 09:42" needs, the file name the rest
    "file": st.column_config.TextColumn("file"),
    "chunks": st.column_config.NumberColumn("chunks", width=56),
    "ingested": st.column_config.DatetimeColumn("ingested", format="MMM D HH:mm", width=96, help="When the file was last ingested"),
}


def render_sidebar(runtime: Runtime) -> Choices:
    settings = runtime.settings
    with st.sidebar:
        st.title("docsrag")
        view = st.radio("View", VIEWS, horizontal=True, label_visibility="collapsed", key="view")
        library = st.container()
        bar = _add_documents(runtime, known_folders(settings, documents(settings)))
        records = documents(settings)  # after any ingestion above
        with library:
            st.subheader("Documents")
            if records:
                st.dataframe(library_rows(records), hide_index=True, column_config=LIBRARY_COLUMNS, width="stretch")
                st.caption(f"{len(records)} files · {sum(r.chunks for r in records)} chunks")
                selected = st.multiselect("Search only in", [r.source for r in records], placeholder="all documents", key=FILTER_KEY)
            else:
                st.caption("No documents yet.")
                selected = []
        st.subheader("Options")
        streaming = st.toggle("Stream answers", value=True)
        _backends(runtime)
    return Choices(sources=selected or None, streaming=streaming, has_documents=bool(records), ingest_bar=bar, view=view)
