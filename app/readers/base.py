"""What every reader returns: pieces of one file, each with its place in the file."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The ingestion.max_file_mb default, for callers without settings.
DEFAULT_MAX_BYTES = 50 * 1024 * 1024


class SkipFile(Exception):
    """A file that cannot be ingested; the message is the reason shown to the user."""


@dataclass
class Piece:
    """A page (PDF) or section of a file: ``section`` is the heading path joined with " > ", ``page`` 1-based (PDF)."""

    text: str
    section: str = ""
    page: int | None = None
    page_label: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
