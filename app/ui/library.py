"""The document library (what the index holds, from the manifest) and ingestion from the page.

Ingestion reuses the page's runtime (``build_ingestor(runtime)``): Milvus Lite
allows one client per index directory, so a second one must not be opened.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from app.composition import Runtime, build_ingestor
from app.ingest_progress import IngestProgress
from app.ingestion import IngestReport
from app.manifest import FileRecord, Manifest
from app.ui.uploads import uploads_dir
from settings import Settings

logger = logging.getLogger(__name__)


def documents(settings: Settings) -> list[FileRecord]:
    """Files fully ingested into the index, by source path."""
    path = settings.storage.index_dir / "state.sqlite"
    if not path.is_file():
        return []
    manifest = Manifest(path, read_only=True)
    try:
        return [record for record in manifest.all() if record.state == "done"]
    finally:
        manifest.close()


def library_rows(records: list[FileRecord]) -> list[dict[str, object]]:
    return [{"file": record.source, "chunks": record.chunks, "ingested": datetime.fromtimestamp(record.ingested_at)} for record in records]


def known_folders(settings: Settings, records: list[FileRecord]) -> list[Path]:
    """Folders ingested before (from the manifest) plus the uploads folder, each once."""
    folders = sorted({Path(record.root) for record in records})
    uploads = uploads_dir(settings).resolve()
    if uploads.is_dir() and uploads not in folders:
        folders.append(uploads)
    return folders


@dataclass
class IngestOutcome:
    """What one ingestion from the page did, kept in the session to show after reruns."""

    summaries: list[str] = field(default_factory=list)
    ingested: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, folder: Path, report: IngestReport) -> None:
        self.summaries.append(f"{folder.name}: {report.summary()}")
        self.ingested.extend(report.ingested)
        self.skipped.extend(report.skipped)
        self.notes.extend(f"{path} is listed as {name}: another folder has a file of that name" for path, name in report.renamed)


def ingest_folders(runtime: Runtime, folders: list[Path], progress: IngestProgress, outcome: IngestOutcome) -> IngestOutcome:
    """Bring the index up to date with each folder; a missing folder is reported, not fatal."""
    ingestor = build_ingestor(runtime)
    try:
        for folder in folders:
            if not folder.exists():
                outcome.errors.append(f"{folder} no longer exists; its documents stay in the index")
                continue

            def step(done: int, total: int, current: str, folder: Path = folder) -> None:
                progress.files(done, total, current, folder=folder.name)

            def planned(sizes: list[int], folder: Path = folder) -> None:
                progress.planned(sizes, folder=folder.name)

            outcome.add(folder, ingestor.ingest(folder, progress=step, embedded=progress.chunks, planned=planned, vectors=progress.vectors))
    finally:
        ingestor.close()
    return outcome


def first_start_folders(settings: Settings, records: list[FileRecord]) -> list[Path]:
    """Folders to ingest when the page starts on an empty index (``ingestion.startup_folders``, e.g. on a Space)."""
    if records:
        return []
    return [Path(folder) for folder in settings.ingestion.startup_folders if Path(folder).is_dir()]
