"""Uploaded files: checked, given a safe name, and stored under ``<index_dir>/uploads/``.

A name that tries to leave the uploads folder is rejected, not rewritten; others keep letters, digits, ``.-_`` and
spaces, anything else becomes ``_``."""

from __future__ import annotations

import os
import re
import tempfile
import unicodedata
from pathlib import Path

from app.readers import SUPPORTED_SUFFIXES
from settings import Settings

MAX_NAME_CHARS = 120
_UNSAFE = re.compile(r"[^\w.\- ]+")


class UploadRejected(ValueError):
    """An upload that is not stored; the message says why, for the user."""


def uploads_dir(settings: Settings) -> Path:
    return settings.storage.index_dir / "uploads"


def allowed_types() -> list[str]:
    """Extensions for ``st.file_uploader(type=...)``."""
    return sorted(suffix.lstrip(".") for suffix in SUPPORTED_SUFFIXES)


def safe_name(name: str) -> str:
    """The name an upload is stored under, or UploadRejected."""
    if any(sep in name for sep in ("/", "\\")) or name.strip() in {".", ".."} or ".." in Path(name).parts:
        raise UploadRejected(f"{name!r} rejected: a file name must not contain a path (/, \\ or ..)")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise UploadRejected(f"{name!r} rejected: the file name contains control characters")
    cleaned = _UNSAFE.sub("_", unicodedata.normalize("NFKC", name)).strip(" .")
    stem, suffix = os.path.splitext(cleaned)
    suffix = suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise UploadRejected(f"{name!r} rejected: {suffix or 'no extension'} is not a supported type ({', '.join(allowed_types())})")
    stem = stem.strip(" .")[: MAX_NAME_CHARS - len(suffix)] or "upload"
    return stem + suffix


def store_upload(settings: Settings, name: str, data: bytes) -> Path:
    """Write one upload into the uploads folder (replacing a file of the same name) and return its path."""
    limit_mb = settings.ingestion.max_file_mb
    if len(data) > limit_mb * 1024 * 1024:
        size_mb = len(data) / 1024 / 1024
        raise UploadRejected(f"{name!r} rejected: {size_mb:.3g} MB is over the {limit_mb:g} MB limit (ingestion.max_file_mb)")
    if not data:
        raise UploadRejected(f"{name!r} rejected: the file is empty")
    folder = uploads_dir(settings).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / safe_name(name)).resolve()
    if target.parent != folder:  # defence in depth: safe_name already refuses paths
        raise UploadRejected(f"{name!r} rejected: it would be stored outside the uploads folder")
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".upload-")
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        if target.is_file():  # kept (same inode, so same size and mtime) until this upload is ingested
            earlier_copy(target).unlink(missing_ok=True)
            os.link(target, earlier_copy(target))
        os.replace(temporary, target)
    except OSError:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target


def earlier_copy(path: Path) -> Path:
    """Where the file an upload replaces waits (an unsupported suffix, so ingestion never lists it)."""
    return path.with_name(f".earlier-{path.name}.kept")


def discard_skipped(stored: list[Path], skipped: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Delete the uploads of this round that ingestion skipped, so they are not read (and reported) again by every
    later upload, putting back the file an upload replaced (whose indexed version ingestion kept); returns
    ``skipped`` with those reasons saying so."""
    by_name = {path.name: path for path in stored}
    kept = []
    for source, reason in skipped:
        path = by_name.get(Path(source).name)
        if path is not None and path.is_file():
            if earlier_copy(path).is_file():
                os.replace(earlier_copy(path), path)
                reason += "; the upload was not kept, the earlier file of that name is"
            else:
                path.unlink()
                reason += "; the upload was not kept"
        kept.append((source, reason))
    for path in stored:
        earlier_copy(path).unlink(missing_ok=True)
    return kept
