"""PDF (pdfium): one piece per physical page, with its printed label and outline section path; running headers and
footers dropped, hyphenated line-ends re-joined when they clearly split a word."""

from __future__ import annotations

import logging
import mmap
import os
import re
import threading
import zlib
from collections import Counter
from pathlib import Path

import pypdfium2 as pdfium
import pypdfium2.raw as pdfium_c

from app.readers.base import DEFAULT_MAX_BYTES, Piece, SkipFile

log = logging.getLogger(__name__)

# pdfium replaces a hyphen at a line end (and the line break) with U+FFFE in FPDFText_GetText
# (U+0002 from other text APIs): it guesses a word was split there.
_PDFIUM_HYPHEN = re.compile("[\ufffe\x02]")
_LINE_END_HYPHEN = re.compile(r"(?<=[^\W\d_])-\n(?=[^\W\d_])")
_DIGITS = re.compile(r"\d+")
_EDGE_LINES = 2
_MIN_PAGES_FOR_RUNNING = 4
_RUNNING_SHARE = 0.5
_HEADER_PROBE = 1024
_TAIL_PROBE = 4096
_STREAM_START = re.compile(rb"\bstream\r?\n")
_INFLATE_STEP = 1 << 20
_READ_STEP = 1 << 16

# pdfium is not thread-safe: one document at a time per process (use processes to parallelise).
_PDFIUM_LOCK = threading.Lock()

_LOAD_ERRORS = {
    pdfium_c.FPDF_ERR_PASSWORD: "encrypted PDF (password required)",
    pdfium_c.FPDF_ERR_SECURITY: "encrypted PDF (unsupported security handler)",
    pdfium_c.FPDF_ERR_FILE: "cannot open file",
}


def read_pdf(path: Path, max_inflated: int = DEFAULT_MAX_BYTES) -> list[Piece]:
    """Read a PDF into per-page pieces; raises SkipFile for encrypted, corrupt, empty or text-less PDFs and for
    PDFs whose non-image Flate streams inflate to more than ``max_inflated`` bytes (pdfium holds a page's
    decoded content in memory, so a small compressed file could otherwise take hundreds of megabytes)."""
    _check_inflated_size(path, max_inflated)
    with _PDFIUM_LOCK:
        pdf = _open(path)
        try:
            labels = _page_labels(pdf)
            sections = _page_sections(pdf)
            texts = [_page_text(pdf, index) for index in range(len(pdf))]
        finally:
            pdf.close()
    if not any(text.strip() for text in texts):
        raise SkipFile("PDF has no extractable text (scanned?)")
    pages = _strip_running_lines([[line.rstrip() for line in text.split("\n")] for text in texts])
    pieces = []
    for index, lines in enumerate(pages):
        body = _join_split_words("\n".join(lines)).strip()
        if body:
            pieces.append(Piece(text=body, section=sections[index], page=index + 1, page_label=labels[index]))
    return pieces


def _open(path: Path) -> pdfium.PdfDocument:
    """Open with the raw API: pypdfium2 leaks the handle of a 0-page PDF and reports a stale error code for it."""
    if path.stat().st_size == 0:
        raise SkipFile("empty file (0 bytes)")
    raw = pdfium_c.FPDF_LoadDocument(os.fsencode(path) + b"\0", None)
    if not raw:
        raise SkipFile(_load_failure_reason(path, pdfium_c.FPDF_GetLastError()))
    if pdfium_c.FPDF_GetPageCount(raw) < 1:
        pdfium_c.FPDF_CloseDocument(raw)
        raise SkipFile("empty PDF (0 pages)")
    return pdfium.PdfDocument(raw)


def _check_inflated_size(path: Path, limit: int) -> None:
    """Inflate the file's Flate streams (images excepted: text extraction does not decode them), reading 64 KB and
    producing at most a megabyte at a time, and stop as soon as their total passes ``limit``."""
    if path.stat().st_size == 0:
        return
    total = 0
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for match in _STREAM_START.finditer(data):
            head = data[max(data.rfind(b"obj", 0, match.start()), match.start() - 4096) : match.start()]
            if b"/FlateDecode" not in head or b"/Image" in head:
                continue
            total += _inflated_size(data, match.end(), limit - total)
            if total > limit:
                raise SkipFile(
                    f"its compressed streams inflate to more than {limit / 1024 / 1024:.0f} MB (ingestion.max_file_mb): "
                    "not read (a decompression bomb, or raise the limit)"
                )


def _inflated_size(data: mmap.mmap, start: int, limit: int) -> int:
    """Bytes the zlib stream at ``start`` inflates to, counted up to just past ``limit`` (0 for a damaged stream:
    pdfium judges those)."""
    inflater, position, size = zlib.decompressobj(), start, 0
    try:
        while not inflater.eof and position < len(data) and size <= limit:
            pending = data[position : position + _READ_STEP]
            position += len(pending)
            while pending and not inflater.eof and size <= limit:
                size += len(inflater.decompress(pending, _INFLATE_STEP))
                pending = inflater.unconsumed_tail
    except zlib.error:
        return 0
    return size


def _load_failure_reason(path: Path, err_code: int) -> str:
    if err_code in _LOAD_ERRORS:
        return _LOAD_ERRORS[err_code]
    with path.open("rb") as handle:
        head = handle.read(_HEADER_PROBE)
        handle.seek(max(0, path.stat().st_size - _TAIL_PROBE))
        tail = handle.read()
    if b"%PDF-" not in head:
        return "not a PDF (no %PDF header)"
    if b"%%EOF" not in tail:
        return "corrupt or truncated PDF (no end-of-file marker)"
    return "corrupt or truncated PDF (unreadable structure)"


def _page_labels(pdf: pdfium.PdfDocument) -> list[str | None]:
    """Printed page labels; pdfium returns '' for every page when the PDF defines none."""
    return [pdf.get_page_label(index) or None for index in range(len(pdf))]


def _page_sections(pdf: pdfium.PdfDocument) -> list[str]:
    """For each page, the path of the last bookmark (in outline order) that starts at or before it."""
    starts: dict[int, str] = {}
    path: list[str] = []
    for bookmark in pdf.get_toc():
        del path[bookmark.level :]
        path.append(bookmark.get_title().strip())
        dest = bookmark.get_dest()
        index = dest.get_index() if dest is not None else None
        if index is not None and 0 <= index < len(pdf):
            # Later entries on the same page win: children follow their parent in outline order.
            starts[index] = " > ".join(title for title in path if title)
    sections = []
    current = ""
    for index in range(len(pdf)):
        current = starts.get(index, current)
        sections.append(current)
    return sections


def _page_text(pdf: pdfium.PdfDocument, index: int) -> str:
    """Text of one page ('' for a page pdfium cannot load, so one damaged page does not lose the file)."""
    try:
        page = pdf[index]
    except pdfium.PdfiumError as exc:
        log.warning("skipping unreadable PDF page %d: %s", index + 1, exc)
        return ""
    try:
        textpage = page.get_textpage()
        try:
            text = textpage.get_text_range()
        finally:
            textpage.close()
    finally:
        page.close()
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    # Undo pdfium's hyphen guess for now; _join_split_words decides after header/footer removal.
    return _PDFIUM_HYPHEN.sub("-\n", text) if ("\ufffe" in text or "\x02" in text) else text


def _running_key(line: str) -> str:
    return _DIGITS.sub("#", line.strip())


def _edge_indices(lines: list[str]) -> set[int]:
    """Indices of the first and last few non-blank lines of a page."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    return set(filled[:_EDGE_LINES] + filled[-_EDGE_LINES:])


def _strip_running_lines(pages: list[list[str]]) -> list[list[str]]:
    """Drop header/footer lines that recur (digits ignored) at the top or bottom of most pages."""
    if len(pages) < _MIN_PAGES_FOR_RUNNING:
        return pages
    edges = [_edge_indices(lines) for lines in pages]
    counts: Counter[str] = Counter()
    for lines, indices in zip(pages, edges, strict=True):
        counts.update({_running_key(lines[i]) for i in indices})
    running = {key for key, n in counts.items() if n >= _RUNNING_SHARE * len(pages)}
    if not running:
        return pages
    log.debug("dropping running header/footer lines: %s", sorted(running))
    return [
        [line for i, line in enumerate(lines) if not (i in indices and _running_key(line) in running)]
        for lines, indices in zip(pages, edges, strict=True)
    ]


def _join_split_words(text: str) -> str:
    """Join 'infor-\\nmation' (lowercase on both sides); keep 'X-\\nWindow', 'UTF-\\n8', '--\\nverbose'."""

    def join(match: re.Match[str]) -> str:
        before, after = text[match.start() - 1], text[match.end()]
        return "" if before.islower() and after.islower() else match.group(0)

    return _LINE_END_HYPHEN.sub(join, text) if "-\n" in text else text
