"""Where a cited source opens: a PDF at its page, an HTML/Markdown/reST page at its section's anchor (docs/asking.md)."""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from pathlib import Path
from urllib.parse import quote

from app.answers import Source
from app.manifest import FileRecord

logger = logging.getLogger(__name__)

PUBLISHED_AS_HTML = {".md", ".markdown", ".rst", ".txt"}
SERVED_AS_TEXT = PUBLISHED_AS_HTML


def slug(title: str) -> str:
    """A heading's anchor as Sphinx (docutils) and GitHub write it: lowercase ASCII words joined by '-'."""
    ascii_text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii").lower()
    return re.sub(r"[^a-z0-9_]+", "-", ascii_text).strip("-")


def anchor(source: Source) -> str:
    if source.page is not None:
        return f"#page={source.page}"
    if source.section:
        name = slug(source.section.split(" > ")[-1])
        return f"#{name}" if name else ""
    return ""


def published_url(base_url: str, source: Source) -> str:
    path = Path(source.source)
    if path.suffix.lower() in PUBLISHED_AS_HTML:
        path = path.with_suffix(".html")
    return f"{base_url.rstrip('/')}/{quote(path.as_posix())}{anchor(source)}"


class SourceLinks:
    def __init__(self, base_url: str, records: list[FileRecord]) -> None:
        self.base_url = base_url
        self.files = {record.source: (Path(record.root), record.source) for record in records}

    def deep_link(self, source: Source) -> str | None:
        """The link outside the page (CLI text and JSON): the published page, else the file itself as a ``file://``
        URL with its page or section anchor; None when the file is gone or outside its folder."""
        if self.base_url:
            return published_url(self.base_url, source)
        path = self._file(source.source)
        return path.as_uri() + anchor(source) if path else None

    def url(self, source: Source) -> str | None:
        if self.base_url:
            url = published_url(self.base_url, source)
            return url if url.lower().startswith(("http://", "https://")) else None  # settings refuse others; never a live file: link
        suffix = Path(source.source).suffix.lower()
        if source.page is not None and suffix == ".pdf":
            served = self._serve(source.source, "application/pdf")
            return f"{served}{anchor(source)}" if served else None
        if suffix in SERVED_AS_TEXT:
            served = self._serve(source.source, "text/plain")
            heading = source.section.split(" > ")[-1] if source.section else ""
            return f"{served}#:~:text={quote(heading)}" if served and heading else served
        return None

    def _file(self, name: str) -> Path | None:
        """The indexed file, or None when it is gone or not inside its folder."""
        if name not in self.files:
            return None
        root, relative = self.files[name]
        path = (root / relative).resolve()
        return path if path.is_file() and path.is_relative_to(root.resolve()) else None

    def _serve(self, name: str, mimetype: str) -> str | None:
        """The page's URL for an indexed file, or None when it cannot be served."""
        from streamlit import runtime

        path = self._file(name)
        if path is None or not runtime.exists():  # bare script runs (no server) cannot serve files
            return None
        coordinates = "docsrag-source-" + hashlib.sha256(str(path).encode()).hexdigest()[:16]
        try:
            return runtime.get_instance().media_file_mgr.add(str(path), mimetype, coordinates)
        except OSError as exc:
            logger.warning("cannot serve %s: %s", path, exc)
            return None
