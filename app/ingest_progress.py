"""Ingestion progress in chunks embedded, with an estimate of the time left (page and CLI).

Files are a poor unit: one 120-page PDF is one file and ~1,200 chunks. The
ingestor reports files as their batches finish and, through
:class:`EmbedWithProgress`, chunks as they are embedded. :class:`IngestProgress`
turns both into "312 of ~1,178 chunks" and an ETA. The total is exact once the
last batch is chunked; before that it is extrapolated from the chunks per file
seen so far.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.schema import BaseNode, TransformComponent

ChunkProgress = Callable[[int, int], None]  # (chunks of this batch embedded so far, chunks this batch embeds)


class EmbedWithProgress(TransformComponent):
    """The pipeline's embedding step, run in slices so a listener hears how many chunks are embedded."""

    embed_model: BaseEmbedding = Field(description="The embedding model the pipeline embeds with.")
    slice_size: int = Field(32, description="Chunks embedded between two progress reports.")
    _listener: ChunkProgress | None = PrivateAttr(None)

    def listen(self, listener: ChunkProgress | None) -> None:
        self._listener = listener

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> Sequence[BaseNode]:
        if self._listener is None:
            return self.embed_model(nodes, **kwargs)
        self._listener(0, len(nodes))
        for start in range(0, len(nodes), self.slice_size):
            self.embed_model(nodes[start : start + self.slice_size], **kwargs)
            self._listener(min(start + self.slice_size, len(nodes)), len(nodes))
        return nodes


def duration(seconds: float) -> str:
    """'45 s', '3 min 20 s', '1 h 05 min'."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class IngestProgress:
    """Progress of one ingestion run, fed by the ingestor's callbacks and read from any thread."""

    def __init__(self, batch_files: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.batch_files = max(1, batch_files)
        self.clock = clock
        self.started = clock()
        self.folder = ""
        self.files_done = self.files_total = 0
        self.current = ""
        self.chunks_before = 0  # chunks embedded in finished batches
        self.batch_done = self.batch_total = 0
        self._lock = threading.Lock()

    def files(self, done: int, total: int, current: str, folder: str = "") -> None:
        """The ingestor's file callback: ``done`` of ``total`` files finished, ``current`` the last one handled."""
        with self._lock:
            if folder != self.folder:  # a new folder: file counts restart, chunk counts carry on
                self.folder, self.files_done, self.files_total = folder, 0, 0
            if done > self.files_done:  # a batch finished: its chunks are settled
                self.chunks_before += self.batch_done
                self.batch_done = self.batch_total = 0
            self.files_done, self.files_total, self.current = done, total, current

    def chunks(self, done: int, total: int) -> None:
        """The embedding step's callback for the current batch."""
        with self._lock:
            self.batch_done, self.batch_total = done, total

    @property
    def embedded(self) -> int:
        return self.chunks_before + self.batch_done

    def estimated_total(self) -> int | None:
        """Chunks this run embeds: exact for the batches seen, extrapolated per file for the rest."""
        known = self.chunks_before + self.batch_total
        files_seen = self._files_seen()
        if not known or not files_seen:
            return None
        return round(known * self.files_total / files_seen)

    def _files_seen(self) -> int:
        """Files whose chunk count is known: finished batches plus the one being embedded."""
        in_batch = min(self.batch_files, self.files_total - self.files_done) if self.batch_total else 0
        return self.files_done + in_batch

    def seconds_left(self) -> float | None:
        total, embedded = self.estimated_total(), self.embedded
        if not total or not embedded:
            return None
        rate = embedded / max(self.clock() - self.started, 1e-3)
        return max(total - embedded, 0) / rate

    def fraction(self) -> float:
        total = self.estimated_total()
        if total:
            return min(self.embedded / total, 1.0)
        return self.files_done / self.files_total if self.files_total else 0.0

    def eta(self) -> str:
        left = self.seconds_left()
        return f"about {duration(left)} left" if left is not None else "estimating the time left"

    def text(self) -> str:
        """One line for a progress bar: chunks embedded of the estimate, file count, current file and time left."""
        with self._lock:
            total = self.estimated_total()
            if total is None:
                chunks = "reading and chunking"
            else:
                approx = "" if self._files_seen() >= self.files_total else "~"
                chunks = f"{self.embedded:,} of {approx}{total:,} chunks embedded"
            where = f"{self.folder}: " if self.folder else ""
            return f"{where}{chunks} · {self.file_position()} · {self.eta()}"

    def file_position(self) -> str:
        """'file 2 of 5 (guide.md)'."""
        if not self.files_total:
            return "planning"
        current = f" ({self.current})" if self.current else ""
        return f"file {min(self.files_done + 1, self.files_total)} of {self.files_total}{current}"
