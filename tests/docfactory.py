"""Write real test documents (PDFs, bad files, text formats) into a directory.

Every PDF is produced with reportlab, so the readers are exercised on genuine files:
outlines (bookmarks), printed page labels, running headers/footers and encryption.
The module-level constants describe what a correct reader must find in them.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path

from reportlab.lib.pagesizes import A4
from reportlab.lib.pdfencrypt import StandardEncryption
from reportlab.pdfgen.canvas import Canvas

RUNNING_HEADER = "Acme Widget Manual - Release 2.1"
RUNNING_FOOTER = "Acme Corp. Confidential - sheet {page} of {pages}"
USER_PASSWORD = "s3cret"

_TOP = A4[1] - 50
_BOTTOM = 40
_LEADING = 14


@dataclass(frozen=True)
class OutlineEntry:
    title: str
    level: int


@dataclass(frozen=True)
class ManualPage:
    """One page of the sample manual: its printed label, bookmarks that start on it and body lines."""

    label: str
    bookmarks: tuple[OutlineEntry, ...]
    body: tuple[str, ...]
    section: str  # the section path a reader must report for this page


MANUAL_PAGES: tuple[ManualPage, ...] = (
    ManualPage("i", (OutlineEntry("Preface", 0),), ("Preface", "This manual describes the Acme widget and its tools."), "Preface"),
    ManualPage(
        "ii",
        (OutlineEntry("Contents", 0),),
        ("Contents", "1 Installation", "2 Usage", "Appendix A: Troubleshooting"),
        "Contents",
    ),
    ManualPage(
        "1",
        (OutlineEntry("1 Installation", 0), OutlineEntry("1.1 Requirements", 1)),
        ("1 Installation", "1.1 Requirements", "The widget needs a Linux host with 2 GB of memory."),
        "1 Installation > 1.1 Requirements",
    ),
    ManualPage(
        "2",
        (),
        (
            "Install the package and read the release infor-",
            "mation shipped with it before the first start.",
            "Older X-",
            "Window setups need an extra font package.",
        ),
        "1 Installation > 1.1 Requirements",
    ),
    ManualPage(
        "3",
        (OutlineEntry("1.2 Configuration", 1),),
        (
            "1.2 Configuration",
            "Edit widget.conf and set the port to 8080.",
            RUNNING_HEADER,
            "The line above quotes the header inside the body and must stay.",
        ),
        "1 Installation > 1.2 Configuration",
    ),
    ManualPage(
        "4",
        (OutlineEntry("2 Usage", 0),),
        ("2 Usage", "Start the widget daemon with widgetd and stop it with widgetctl stop."),
        "2 Usage",
    ),
    ManualPage(
        "5",
        (OutlineEntry("2.1 Command line", 1), OutlineEntry("2.1.1 Options", 2)),
        ("2.1 Command line", "2.1.1 Options", "The --verbose flag prints every request."),
        "2 Usage > 2.1 Command line > 2.1.1 Options",
    ),
    ManualPage(
        "A-1",
        (OutlineEntry("Appendix A: Troubleshooting", 0),),
        ("Appendix A: Troubleshooting", "If the widget hangs, delete the lock file and restart it."),
        "Appendix A: Troubleshooting",
    ),
)
MANUAL_LABELS = [page.label for page in MANUAL_PAGES]
MANUAL_SECTIONS = [page.section for page in MANUAL_PAGES]


def _draw_page(canvas: Canvas, number: int, pages: int, body: tuple[str, ...] | list[str]) -> None:
    canvas.setFont("Helvetica", 10)
    canvas.drawString(72, _TOP, RUNNING_HEADER)
    y = _TOP - 3 * _LEADING
    for line in body:
        canvas.drawString(72, y, line)
        y -= _LEADING
    canvas.drawString(72, _BOTTOM, RUNNING_FOOTER.format(page=number, pages=pages))


def _add_manual_labels(canvas: Canvas) -> None:
    """Roman numerals for the front matter, arabic from the first chapter, 'A-n' for the appendix."""
    canvas.addPageLabel(0, style="ROMAN_LOWER")
    canvas.addPageLabel(2, style="ARABIC", start=1)
    canvas.addPageLabel(len(MANUAL_PAGES) - 1, style="ARABIC", start=1, prefix="A-")


def _write_manual(canvas: Canvas) -> None:
    _add_manual_labels(canvas)
    for index, page in enumerate(MANUAL_PAGES):
        _draw_page(canvas, index + 1, len(MANUAL_PAGES), page.body)
        for n, entry in enumerate(page.bookmarks):
            key = f"p{index}b{n}"
            canvas.bookmarkPage(key)
            canvas.addOutlineEntry(entry.title, key, level=entry.level)
        canvas.showPage()
    canvas.save()


def make_manual_pdf(path: Path) -> Path:
    """An 8-page manual with nested bookmarks, page labels (i, ii, 1..5, A-1) and a running header/footer."""
    _write_manual(Canvas(str(path), pagesize=A4))
    return path


def make_encrypted_pdf(path: Path) -> Path:
    """The manual, encrypted with a user password (cannot be opened without it)."""
    _write_manual(Canvas(str(path), pagesize=A4, encrypt=StandardEncryption(USER_PASSWORD, ownerPassword="owner-pw")))
    return path


def make_owner_locked_pdf(path: Path) -> Path:
    """The manual, encrypted with an owner password only (opens without a password, like many real PDFs)."""
    encryption = StandardEncryption("", ownerPassword="owner-pw", canModify=0, canCopy=0)
    _write_manual(Canvas(str(path), pagesize=A4, encrypt=encryption))
    return path


def make_truncated_pdf(path: Path) -> Path:
    """The first half of a valid manual PDF, as left behind by an interrupted download."""
    whole = io.BytesIO()
    _write_manual(Canvas(whole, pagesize=A4))
    data = whole.getvalue()
    path.write_bytes(data[: len(data) // 2])
    return path


def make_empty_file(path: Path) -> Path:
    """A 0-byte file (any extension)."""
    path.write_bytes(b"")
    return path


def make_junk_pdf(path: Path, size: int = 4096) -> Path:
    """Random binary junk with a .pdf name."""
    path.write_bytes(random.Random(1234).randbytes(size))
    return path


def make_textless_pdf(path: Path, pages: int = 2) -> Path:
    """Pages with drawings but no text, like a scan without OCR."""
    canvas = Canvas(str(path), pagesize=A4)
    for _ in range(pages):
        canvas.rect(100, 100, 300, 500, fill=1)
        canvas.showPage()
    canvas.save()
    return path


def raw_pdf(path: Path, objects: list[bytes]) -> Path:
    """A PDF of the given object bodies (object n is objects[n-1], object 1 the catalog) with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref_at = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref_at)
    path.write_bytes(bytes(out))
    return path


def make_zero_page_pdf(path: Path) -> Path:
    """A structurally valid PDF whose page tree has no pages."""
    return raw_pdf(path, [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"])


def make_binary_markdown(path: Path) -> Path:
    """A .md file that is really binary data (NUL bytes)."""
    path.write_bytes(b"# Title\n\x00\x01\x02\x00\xff\xfe\x00binary\x00" * 16)
    return path


def make_undecodable_text(path: Path) -> Path:
    """A .txt in Shift_JIS: not UTF-8, and its 0x81 lead bytes are undefined in Windows-1252."""
    path.write_bytes("日本語のテキスト、です。設定ファイルを編集します。\n".encode("shift_jis"))
    return path


_LOREM = (
    "The widget controller reads its configuration at start-up and validates every key against the schema; "
    "unknown keys are reported with their line number so that typing mistakes are easy to find. "
)


def _long_page_lines(number: int, lines: int = 45, width: int = 90) -> list[str]:
    text = (f"Page {number} paragraph. " + _LOREM) * (lines * width // len(_LOREM) + 1)
    return [text[i * width : (i + 1) * width] for i in range(lines)]


def make_long_pdf(path: Path, pages: int = 200) -> Path:
    """A dense PDF for benchmarks: ~4 KB of text per page, a chapter bookmark every 10 pages, no page labels."""
    canvas = Canvas(str(path), pagesize=A4)
    for index in range(pages):
        _draw_page(canvas, index + 1, pages, _long_page_lines(index + 1))
        if index % 10 == 0:
            canvas.bookmarkPage(f"c{index}")
            canvas.addOutlineEntry(f"Chapter {index // 10 + 1}", f"c{index}", level=0)
        canvas.showPage()
    canvas.save()
    return path


SAMPLE_MARKDOWN = """# Guide

Intro text.

## Install

Run `pip install widget`.
"""

SAMPLE_HTML = """<!DOCTYPE html>
<html><head><title>Widget docs</title><style>body { color: red; }</style><script>var tracking = 1;</script></head>
<body>
<nav class="sidebar"><a href="/">Home</a> <a href="/search">Search the docs</a></nav>
<header><p>Site banner text</p></header>
<div class="document"><div role="main">
<section id="install">
<h1>Installation<a class="headerlink" href="#install" title="Link to this heading">¶</a></h1>
<p>Install the <strong>widget</strong> with pip.</p>
<pre>
def hello():
    return "world"   # indentation must survive
</pre>
<section id="config">
<h2>Configuration<a class="headerlink" href="#config">¶</a></h2>
<p>Set the options below.</p>
<table><tr><th>Key</th><th>Meaning</th></tr><tr><td>port</td><td>TCP port</td></tr></table>
</section>
</section>
</div></div>
<aside>Related: other products</aside>
<footer>Copyright footer text</footer>
</body></html>
"""

SAMPLE_RST = """=========
Widget
=========

Intro paragraph.

Install
=======

Use pip.

.. code-block:: console

   $ pip install widget

Options
-------

Configure it.

Usage
=====

Run it.
"""

SAMPLE_PYTHON = '''"""Sample module."""


def greet(name: str) -> str:
    """Return a greeting."""
    return f"Hello, {name}!"
'''


def write_text_samples(directory: Path) -> dict[str, Path]:
    """One small valid file per text format, keyed by format name."""
    samples = {
        "markdown": ("guide.md", SAMPLE_MARKDOWN),
        "html": ("index.html", SAMPLE_HTML),
        "rst": ("intro.rst", SAMPLE_RST),
        "text": ("notes.txt", "Plain notes about the widget.\n"),
        "code": ("greet.py", SAMPLE_PYTHON),
    }
    written: dict[str, Path] = {}
    for fmt, (name, content) in samples.items():
        written[fmt] = directory / name
        written[fmt].write_text(content, encoding="utf-8")
    return written
