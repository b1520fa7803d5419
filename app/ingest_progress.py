"""Ingestion progress by bytes read, with chunks counted as they are embedded and the time left (docs/design-notes.md)."""

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
    """Progress of one ingestion run, fed by the ingestor's callbacks and read from any thread; with the ingestor's
    batch limits (``batch_files``, ``batch_mb``) the bytes of the batch being embedded are known."""

    def __init__(self, batch_files: int, batch_mb: float = 8.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.batch_files = max(1, batch_files)
        self.batch_bytes = batch_mb * 1024 * 1024
        self.clock = clock
        self.started = clock()
        self.folder = ""
        self.files_done = self.files_total = 0
        self.current = ""
        self.sizes: list[int] = []  # bytes of each file this folder's run reads, in order
        self.chunks_before = 0  # chunks embedded in finished batches
        self.batch_done = self.batch_total = 0
        self.bytes_before = 0  # bytes of the folders finished before this one
        self.vectors_done = self.vectors_total = 0  # the second pass of a keywords-first ingest (integrations.pending_vectors)
        self.vectors_started = 0.0
        self._lock = threading.Lock()

    @classmethod
    def for_settings(cls, ingestion: Any) -> IngestProgress:
        return cls(ingestion.batch_files, ingestion.batch_mb)

    def planned(self, sizes: Sequence[int], folder: str = "") -> None:
        """The ingestor's plan: the byte size of each file it reads, in the order it reads them."""
        with self._lock:
            self._enter(folder)
            self.sizes = list(sizes)
            self.files_total = len(self.sizes)

    def files(self, done: int, total: int, current: str, folder: str = "") -> None:
        """The ingestor's file callback: ``done`` of ``total`` files finished, ``current`` the last one handled."""
        with self._lock:
            self._enter(folder)
            if done > self.files_done:  # a batch finished: its chunks are settled
                self.chunks_before += self.batch_done
                self.batch_done = self.batch_total = 0
            self.files_done, self.files_total, self.current = done, total, current

    def _enter(self, folder: str) -> None:
        if folder != self.folder:  # a new folder: file counts restart, chunk counts and finished bytes carry on
            self.bytes_before += sum(self.sizes)
            self.folder, self.files_done, self.files_total, self.sizes = folder, 0, 0, []
            self.chunks_before += self.vectors_done
            self.vectors_done = self.vectors_total = 0

    def vectors(self, done: int, total: int) -> None:
        """The second pass's callback: ``done`` of the ``total`` chunks stored without a vector are embedded."""
        with self._lock:
            if not self.vectors_total:
                self.vectors_started = self.clock()
            self.vectors_done, self.vectors_total = done, total

    def chunks(self, done: int, total: int) -> None:
        """The embedding step's callback for the current batch."""
        with self._lock:
            self.batch_done, self.batch_total = done, total

    @property
    def embedded(self) -> int:
        return self.chunks_before + self.batch_done + self.vectors_done

    def _batch_end(self) -> int:
        """Index after the last file of the batch being read (the ingestor's rule: batch_files files, batch_mb bytes)."""
        end, size = self.files_done, 0
        while end < len(self.sizes):
            fits = end - self.files_done < self.batch_files and size + self.sizes[end] <= self.batch_bytes
            if end > self.files_done and not fits:
                break
            size += self.sizes[end]
            end += 1
        return end

    def bytes_done(self) -> float:
        done = sum(self.sizes[: self.files_done])
        if self.batch_total:
            done += sum(self.sizes[self.files_done : self._batch_end()]) * self.batch_done / self.batch_total
        return self.bytes_before + done

    def total_bytes(self) -> int:
        return self.bytes_before + sum(self.sizes)

    def fraction(self) -> float:
        """Of the bytes read (one pass, or the first); in a second pass, of its chunks embedded."""
        if self.vectors_total:
            return self.vectors_done / self.vectors_total
        if self.sizes and self.total_bytes():
            return min(self.bytes_done() / self.total_bytes(), 1.0)
        return self.files_done / self.files_total if self.files_total else 0.0

    def seconds_left(self) -> float | None:
        done = self.fraction()
        if done <= 0 or not (self.sizes or self.vectors_total):
            return None
        return (self.clock() - (self.vectors_started if self.vectors_total else self.started)) * (1 - done) / done

    def eta(self) -> str:
        left = self.seconds_left()
        return f"about {duration(left)} left" if left is not None else "estimating the time left"

    def text(self) -> str:
        """One line for a progress bar: files committed, chunks embedded, megabytes read and time left."""
        with self._lock:
            where = f"{self.folder}: " if self.folder else ""
            if self.vectors_total:
                return (
                    f"{where}{self.files_done:,} file{'s' if self.files_done != 1 else ''} searchable by keywords · "
                    f"{self.vectors_done:,} of {self.vectors_total:,} chunks embedded · {self.eta()}"
                )
            if not self.files_total:
                return f"{where}planning"
            parts = [f"{self.files_done:,} of {self.files_total:,} files done", f"{self.embedded:,} chunks embedded"]
            if self.sizes:
                parts.append(f"{megabytes(self.bytes_done())} of {megabytes(self.total_bytes())} MB")
            return where + " · ".join(parts) + f" · {self.eta()}"


def megabytes(size: float) -> str:
    return f"{size / 1024 / 1024:,.1f}"
