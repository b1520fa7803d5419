"""Ingestion from the page in a background thread: one job per index (Milvus Lite takes one writer), shared by every
browser session of the process, followed by the session that started it and picked up again by each rerun."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from app.composition import Runtime
from app.ingest_progress import IngestProgress
from app.ui.library import IngestOutcome, ingest_folders
from app.ui.uploads import discard_skipped

logger = logging.getLogger(__name__)


@dataclass
class IngestJob:
    folders: list[Path]
    progress: IngestProgress
    outcome: IngestOutcome
    uploads: list[Path] = field(default_factory=list)  # files stored by this upload round
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, runtime: Runtime) -> None:
        try:
            ingest_folders(runtime, self.folders, self.progress, self.outcome)
        except Exception as exc:  # shown to the user; the manifest's pending marks let the next run repair the index
            logger.exception("ingestion from the page failed")
            self.outcome.errors.append(f"Ingestion failed: {type(exc).__name__}: {exc}")
        finally:
            self.outcome.skipped = discard_skipped(self.uploads, self.outcome.skipped)
            self.done.set()

    def status(self) -> str:
        return self.progress.text()


class IngestSlot:
    """The index's one running ingestion, if any."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._job: IngestJob | None = None

    def running(self) -> IngestJob | None:
        job = self._job
        return job if job is not None and not job.done.is_set() else None

    def start(self, runtime: Runtime, job: IngestJob) -> IngestJob | None:
        """Start ``job``; returns the job already running instead, if there is one."""
        with self._lock:
            running = self.running()
            if running is not None:
                return running
            self._job = job
        threading.Thread(target=job.run, args=(runtime,), name="docsrag-ingest", daemon=True).start()
        return None


@st.cache_resource
def ingest_slot(key: str) -> IngestSlot:
    """The slot of the index ``key`` (its Milvus URI), shared across browser sessions of this process."""
    return IngestSlot()


def busy_message(job: IngestJob) -> str:
    return f"Another ingestion of this index is running ({job.status()}). Add your files again when it has finished."
