"""Per-format readers: a file in, its pieces (pages or sections) out, or SkipFile with the reason."""

from __future__ import annotations

from pathlib import Path

from app.readers.base import DEFAULT_MAX_BYTES, Piece, SkipFile
from app.readers.code import CODE_LANGUAGES
from app.readers.markdown import split_markdown
from app.readers.rst import looks_like_rst, split_rst
from app.readers.text import decode_text
from app.walker import read_bounded

TEXT_FORMATS = {".md": "markdown", ".markdown": "markdown", ".html": "html", ".htm": "html", ".rst": "rst", ".txt": "text", ".text": "text"}
SUPPORTED_SUFFIXES = frozenset({".pdf", *TEXT_FORMATS, *CODE_LANGUAGES})


def file_format(path: Path) -> str | None:
    """'pdf', 'markdown', 'html', 'rst', 'text' or 'code'; None for unsupported files."""
    suffix = path.suffix.lower()
    if path.name.lower().endswith(".rst.txt"):  # how Sphinx ships reST sources (_sources/)
        return "rst"
    if suffix == ".pdf":
        return "pdf"
    if suffix in CODE_LANGUAGES:
        return "code"
    return TEXT_FORMATS.get(suffix)


def read_pieces(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> list[Piece]:
    """Read one supported file of at most ``max_bytes``. Raises SkipFile with a user-facing reason for bad input."""
    fmt = file_format(path)
    if fmt is None:
        raise SkipFile(f"unsupported file type {path.suffix or '(none)'}")
    if fmt == "pdf":
        from app.readers.pdf import read_pdf

        pieces = read_pdf(path, max_bytes)
    else:
        text = decode_text(read_bounded(path, max_bytes))
        if fmt == "markdown":
            pieces = split_markdown(text)
        elif fmt == "html":
            from app.readers.html import read_html

            pieces = read_html(text)
        elif fmt == "rst" or (fmt == "text" and looks_like_rst(text)):
            pieces = split_rst(text)
        elif fmt == "code":
            pieces = [Piece(text=text, extra={"language": CODE_LANGUAGES[path.suffix.lower()]})]
        else:
            pieces = [Piece(text=text)]
    pieces = [p for p in pieces if p.text.strip()]
    if not pieces:
        raise SkipFile("no extractable text")
    return pieces


__all__ = ["DEFAULT_MAX_BYTES", "SUPPORTED_SUFFIXES", "Piece", "SkipFile", "file_format", "read_pieces"]
