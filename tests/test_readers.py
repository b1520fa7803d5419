"""Readers over real generated files: PDF pages, HTML main content, reST sections, code chunks, bad input."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from llama_index.core.node_parser import CodeSplitter

from app.readers import SkipFile, read_pieces
from app.readers.code import CODE_LANGUAGES, make_code_splitter
from app.readers.html import read_html
from app.readers.markdown import split_markdown
from app.readers.pdf import read_pdf
from app.readers.rst import split_rst
from tests import docfactory as factory


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("docs")


@pytest.fixture(scope="module")
def manual(docs: Path) -> Path:
    return factory.make_manual_pdf(docs / "manual.pdf")


# --- the factory builds what it promises (checked with pypdfium2 directly, not with our reader) ---


def test_factory_manual_has_nested_outline_page_labels_and_running_lines(manual: Path) -> None:
    pdf = pdfium.PdfDocument(manual)
    try:
        outline = [(mark.level, mark.get_title(), mark.get_dest().get_index()) for mark in pdf.get_toc()]
        labels = [pdf.get_page_label(i) for i in range(len(pdf))]
        first_page = pdf[0].get_textpage().get_text_range()
    finally:
        pdf.close()
    assert (1, "1.1 Requirements", 2) in outline
    assert (2, "2.1.1 Options", 6) in outline
    assert labels == factory.MANUAL_LABELS
    assert first_page.startswith(factory.RUNNING_HEADER)
    assert "sheet 1 of 8" in first_page


def test_factory_encrypted_pdf_opens_only_with_its_password(docs: Path) -> None:
    path = factory.make_encrypted_pdf(docs / "locked-check.pdf")
    with pytest.raises(pdfium.PdfiumError):
        pdfium.PdfDocument(path)
    pdf = pdfium.PdfDocument(path, password=factory.USER_PASSWORD)
    try:
        assert len(pdf) == len(factory.MANUAL_PAGES)
    finally:
        pdf.close()


# --- PDF ---


def test_pdf_pages_carry_physical_page_printed_label_and_outline_section(manual: Path) -> None:
    pieces = read_pdf(manual)
    assert [p.page for p in pieces] == list(range(1, len(factory.MANUAL_PAGES) + 1))
    assert [p.page_label for p in pieces] == factory.MANUAL_LABELS
    assert [p.section for p in pieces] == factory.MANUAL_SECTIONS


def test_pdf_section_carries_forward_to_pages_without_bookmarks_and_label_is_none_without_labels(docs: Path) -> None:
    pieces = read_pdf(factory.make_long_pdf(docs / "long-25.pdf", pages=25))
    assert [p.section for p in pieces] == ["Chapter 1"] * 10 + ["Chapter 2"] * 10 + ["Chapter 3"] * 5
    assert {p.page_label for p in pieces} == {None}


def test_pdf_running_header_and_footer_are_stripped_but_body_quotes_stay(manual: Path) -> None:
    pieces = read_pdf(manual)
    for piece in pieces:
        lines = piece.text.splitlines()
        assert lines[0] != factory.RUNNING_HEADER
        assert "Confidential - sheet" not in piece.text
    quoting_page = pieces[4]
    assert quoting_page.text.count(factory.RUNNING_HEADER) == 1
    assert "The line above quotes the header" in quoting_page.text


def test_pdf_with_fewer_than_four_pages_keeps_repeated_lines(docs: Path) -> None:
    pieces = read_pdf(factory.make_long_pdf(docs / "short.pdf", pages=3))
    assert all(piece.text.startswith(factory.RUNNING_HEADER) for piece in pieces)


def test_pdf_joins_words_split_by_hyphenation_but_keeps_real_hyphens(manual: Path) -> None:
    text = read_pdf(manual)[3].text
    assert "read the release information shipped" in text
    assert "Older X-\nWindow setups" in text
    assert "The --verbose flag" in read_pdf(manual)[6].text


def test_pdf_with_owner_password_only_is_read(docs: Path) -> None:
    pieces = read_pdf(factory.make_owner_locked_pdf(docs / "owner.pdf"))
    assert [p.page_label for p in pieces] == factory.MANUAL_LABELS


BAD_PDFS: list[tuple[Callable[[Path], Path], str]] = [
    (factory.make_empty_file, "empty file (0 bytes)"),
    (factory.make_zero_page_pdf, "empty PDF (0 pages)"),
    (factory.make_encrypted_pdf, "encrypted PDF (password required)"),
    (factory.make_truncated_pdf, "truncated"),
    (factory.make_junk_pdf, "not a PDF"),
    (factory.make_textless_pdf, "no extractable text (scanned?)"),
]


@pytest.mark.parametrize(("make", "reason"), BAD_PDFS, ids=[make.__name__ for make, _ in BAD_PDFS])
def test_bad_pdf_is_skipped_with_a_reason_naming_the_problem(docs: Path, make: Callable[[Path], Path], reason: str) -> None:
    path = make(docs / f"{make.__name__}.pdf")
    with pytest.raises(SkipFile, match=re.escape(reason)):
        read_pieces(path)


_FD_DIR = Path("/proc/self/fd")


@pytest.mark.skipif(not _FD_DIR.is_dir(), reason="needs /proc/self/fd")
def test_reading_pdfs_releases_every_pdfium_document(docs: Path, manual: Path) -> None:
    """pdfium keeps a file descriptor per open document: none may be left behind, whatever the outcome."""
    zero_pages = factory.make_zero_page_pdf(docs / "zero-again.pdf")
    textless = factory.make_textless_pdf(docs / "textless-again.pdf")
    before = len(list(_FD_DIR.iterdir()))
    for _ in range(30):
        assert len(read_pdf(manual)) == len(factory.MANUAL_PAGES)
        for bad in (zero_pages, textless):
            with pytest.raises(SkipFile):
                read_pdf(bad)
    assert len(list(_FD_DIR.iterdir())) == before


# --- bad text files ---


def test_markdown_file_with_nul_bytes_is_skipped_as_binary(docs: Path) -> None:
    with pytest.raises(SkipFile, match="binary"):
        read_pieces(factory.make_binary_markdown(docs / "junk.md"))


def test_text_file_in_undecodable_encoding_is_skipped(docs: Path) -> None:
    with pytest.raises(SkipFile, match="not valid UTF-8"):
        read_pieces(factory.make_undecodable_text(docs / "shift-jis.txt"))


# --- HTML ---


def test_html_keeps_main_content_headings_code_and_tables_and_drops_navigation() -> None:
    pieces = read_html(factory.SAMPLE_HTML)
    text = "\n".join(p.text for p in pieces)
    assert [p.section for p in pieces] == ["Installation", "Installation > Configuration"]
    assert pieces[0].text.startswith("# Installation\n")
    assert '```\ndef hello():\n    return "world"   # indentation must survive\n```' in text
    assert "| port | TCP port |" in text
    for noise in ("Search the docs", "Site banner", "Related:", "Copyright footer", "tracking", "color: red", "¶"):
        assert noise not in text


def test_html_without_main_element_falls_back_to_body_without_page_chrome() -> None:
    page = (
        "<html><body><header><h1>Site name</h1></header><nav>Menu</nav>"
        "<h1>Guide</h1><p>Body text.</p><h2>Step one</h2><p>Do it.</p><footer>Imprint</footer></body></html>"
    )
    pieces = read_html(page)
    assert [p.section for p in pieces] == ["Guide", "Guide > Step one"]
    assert "Site name" not in pieces[0].text
    assert "Imprint" not in pieces[1].text


def test_html_article_header_holding_the_title_is_kept() -> None:
    page = "<body><nav>x</nav><article><header><h1>Release notes</h1></header><p>Fixed bugs.</p></article></body>"
    pieces = read_html(page)
    assert [p.section for p in pieces] == ["Release notes"]
    assert "Fixed bugs." in pieces[0].text


def test_html_code_block_language_comes_from_sphinx_highlight_class_and_permalinks_are_dropped() -> None:
    page = (
        '<div role="main"><h1>API<a href="#api" class="mark">#</a></h1>'
        '<div class="highlight-python notranslate"><div class="highlight"><pre><span class="k">import</span> os\n</pre></div></div></div>'
    )
    (piece,) = read_html(page)
    assert piece.text == "# API\n\n```python\nimport os\n```"


# --- reST ---


def test_markdown_hash_lines_inside_code_fences_are_not_headings() -> None:
    text = (
        "# Tool\n\n````markdown\n```bash\n# not a heading\n```\n# still code\n````\n\n"  # a fence shown inside a longer one
        "## Usage\n\n~~~\n# tilde fence\n```\n# still code\n~~~\n\n"
        "### Run\n\n```tcl\nrun_tool\n\n```{note}\n# a directive line does not close the open fence\n```\n\n"
        "## After\n\nInline ```x``` code does not open a fence.\n\n# End\n"
    )
    sections = [p.section for p in split_markdown(text)]
    assert sections == ["Tool", "Tool > Usage", "Tool > Usage > Run", "Tool > After", "End"]


def test_rst_heading_levels_follow_first_appearance_and_build_paths() -> None:
    pieces = split_rst(factory.SAMPLE_RST)
    assert [p.section for p in pieces] == ["Widget", "Widget > Install", "Widget > Install > Options", "Widget > Usage"]
    assert "```console\n$ pip install widget\n```" in pieces[1].text
    assert "=====" not in pieces[1].text


def test_rst_level_is_set_by_style_order_not_by_character() -> None:
    text = "Top\n---\n\nbody\n\nInner\n=====\n\nmore\n\nNext\n----\n\nend\n"
    assert [p.section for p in split_rst(text)] == ["Top", "Top > Inner", "Next"]


def test_rst_overline_and_underline_style_differs_from_underline_only() -> None:
    text = "=====\nTitle\n=====\n\nChapter\n=======\n\ntext\n"
    assert [p.section for p in split_rst(text)] == ["Title", "Title > Chapter"]


def test_rst_ignores_short_underlines_indented_lines_tables_and_transitions() -> None:
    text = (
        "Real title\n==========\n\n"
        "Too short underline\n=====\n\n"
        "   indented\n   ========\n\n"
        "=====  =====\ncol a  col b\n=====  =====\n\n"
        "para\n\n----------\n\nafter transition\n"
    )
    pieces = split_rst(text)
    assert [p.section for p in pieces] == ["Real title"]
    assert "after transition" in pieces[0].text


def test_rst_section_path_drops_inline_markup() -> None:
    text = "The ``widget`` API\n==================\n\n:mod:`widget.core` module\n--------------------------\n\nx\n"
    assert split_rst(text)[-1].section == "The widget API > widget.core module"


# --- code ---

PYTHON_FUNCTIONS = [
    f'def function_{n}(value: int) -> int:\n    """Step {n} of the pipeline."""\n    total = value * {n}\n'
    f"    for i in range({n}):\n        total += i\n    return total\n"
    for n in range(6)
]


def split_code(source: str, language: str, chunk_chars: int) -> list[str]:
    """Code chunks as ingestion makes them (DocumentChunker sizes code chunks at 4 characters per token)."""
    from llama_index.core.schema import Document

    from app.chunking import CHARS_PER_TOKEN, DocumentChunker

    chunker = DocumentChunker(chunk_size=chunk_chars // CHARS_PER_TOKEN, chunk_overlap=0)
    return [chunk.text for chunk in chunker([Document(text=source, metadata={"source": "x", "language": language})])]


def test_code_splitter_keeps_each_whole_function_in_one_chunk() -> None:
    source = "import os\n\n\n" + "\n\n".join(PYTHON_FUNCTIONS)
    chunks = split_code(source, "python", chunk_chars=300)
    assert len(chunks) > 1
    for function in PYTHON_FUNCTIONS:
        assert sum(function.strip() in chunk for chunk in chunks) == 1, function


@pytest.mark.parametrize(
    ("language", "source"),
    [
        ("c", "int add(int a, int b) {\n    return a + b;\n}\n"),
        ("cpp", "namespace n {\nint add(int a, int b) {\n    return a + b;\n}\n}\n"),
        ("javascript", "function add(a, b) {\n  return a + b;\n}\n"),
        ("typescript", "function add(a: number, b: number): number {\n  return a + b;\n}\n"),
        ("tsx", "const App = (): JSX.Element => <div>{1 + 1}</div>;\n"),
        ("go", "package main\n\nfunc add(a int, b int) int {\n\treturn a + b\n}\n"),
        ("rust", "fn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n"),
        ("java", "class A {\n    int add(int a, int b) {\n        return a + b;\n    }\n}\n"),
    ],
)
def test_every_mapped_language_has_an_offline_grammar(language: str, source: str) -> None:
    splitter = make_code_splitter(language, chunk_chars=500)
    assert isinstance(splitter, CodeSplitter)
    assert splitter.split_text(source) == [source.strip()]


def test_code_language_map_only_names_languages_with_grammars() -> None:
    for language in set(CODE_LANGUAGES.values()):
        make_code_splitter(language, chunk_chars=100)


def test_unparseable_code_falls_back_to_line_chunks() -> None:
    garbage, limit = "}}}{{{ )))(((\n" * 30, 100
    with pytest.raises(ValueError, match="Could not parse"):
        make_code_splitter("python", chunk_chars=limit).split_text(garbage)
    chunks = split_code(garbage, "python", chunk_chars=limit)
    assert all(len(chunk) <= limit for chunk in chunks)
    assert "\n".join(chunks).splitlines() == garbage.splitlines()


def test_unknown_language_is_a_value_error_for_the_splitter_and_a_line_split_for_the_chunker() -> None:
    with pytest.raises(ValueError, match="cobol"):
        make_code_splitter("cobol", chunk_chars=100)
    assert split_code("MOVE A TO B.\nSTOP RUN.\n", "cobol", chunk_chars=100) == ["MOVE A TO B.\nSTOP RUN."]


# --- dispatch ---


def test_read_pieces_dispatches_every_format(docs: Path, manual: Path) -> None:
    samples = factory.write_text_samples(docs)
    assert [p.section for p in read_pieces(samples["markdown"])] == ["Guide", "Guide > Install"]
    assert [p.section for p in read_pieces(samples["html"])] == ["Installation", "Installation > Configuration"]
    assert read_pieces(samples["rst"])[-1].section == "Widget > Usage"
    assert read_pieces(samples["text"])[0].text == "Plain notes about the widget.\n"
    (code,) = read_pieces(samples["code"])
    assert code.extra == {"language": "python"}
    assert "def greet" in code.text
    assert [p.page_label for p in read_pieces(manual)] == factory.MANUAL_LABELS


def test_read_pieces_rejects_unsupported_suffix(docs: Path) -> None:
    path = docs / "picture.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(SkipFile, match=r"unsupported file type \.png"):
        read_pieces(path)


# --- Sphinx markup ---

SPHINX_SOURCE = """Files and folders
=================

See :func:`os.walk`, :class:`~pathlib.Path`, :meth:`!str.join` and :ref:`the tutorial <tut-files>`.

.. function:: walk(top, topdown=True)

   Generate the file names in a directory tree.

   .. versionchanged:: 3.5
      Uses :func:`os.scandir`.

   .. code-block:: python

      for root, dirs, files in walk("."):
          print(":func:`kept`")

.. note::

   Links are not followed.

.. include:: /etc/passwd

After the function.
"""


def test_rst_renders_sphinx_roles_objects_admonitions_and_keeps_code() -> None:
    pieces = split_rst(SPHINX_SOURCE)
    assert [p.section for p in pieces] == [
        "Files and folders",
        "Files and folders > walk(top, topdown=True)",
        "Files and folders",
    ]
    assert "See os.walk(), Path, str.join() and the tutorial." in pieces[0].text
    function = pieces[1].text
    assert "Changed in version 3.5:" in function and "Uses os.scandir()." in function
    assert '```python\nfor root, dirs, files in walk("."):\n    print(":func:`kept`")\n```' in function
    assert "Note:" in pieces[2].text and "After the function." in pieces[2].text
    assert "passwd" not in "".join(p.text for p in pieces) and ".. " not in "".join(p.text for p in pieces)


def test_txt_holding_rest_is_read_as_rest_and_prose_stays_text(docs: Path) -> None:
    sphinx_txt = docs / "guide.rst.txt"
    sphinx_txt.write_text(SPHINX_SOURCE, encoding="utf-8")
    plain = docs / "readme.txt"
    plain.write_text(SPHINX_SOURCE, encoding="utf-8")
    prose = docs / "notes.txt"
    prose.write_text("Just notes.\nNothing: to see here.\n", encoding="utf-8")
    assert (
        [p.section for p in read_pieces(sphinx_txt)]
        == [p.section for p in read_pieces(plain)]
        == [p.section for p in split_rst(SPHINX_SOURCE)]
    )
    assert read_pieces(prose)[0].section == ""


def test_html_api_entries_become_sections_titled_by_their_signature() -> None:
    from app.readers.html import read_html

    page = (
        "<div role='main'><h1>Module</h1><dl class='py class'><dt class='sig'><em>class </em>m.<span>Pool</span>(size)"
        "<a class='headerlink' href='#m.Pool'>¶</a></dt><dd><p>A pool.</p><dl class='py method'><dt>get()</dt>"
        "<dd><p>Take one.</p></dd></dl></dd></dl></div>"
    )
    pieces = read_html(page)
    assert [p.section for p in pieces] == ["Module", "Module > class m.Pool(size)", "Module > class m.Pool(size) > get()"]
    assert pieces[2].text.endswith("Take one.")


def test_html_nested_thousands_of_levels_is_read_as_text() -> None:
    from app.readers.html import read_html

    page = (
        "<html><body><h1>Crossref</h1><ul>" + "".join(f"<li><a href='p{n}.html'>page {n}</a>" for n in range(3000)) + "</ul></body></html>"
    )
    (piece,) = read_html(page)  # html.parser nests each unclosed <li> inside the previous one
    assert "page 0" in piece.text and "page 2999" in piece.text


def test_a_pdf_flate_bomb_is_skipped_before_pdfium_inflates_it(tmp_path: Path) -> None:
    from app.readers.pdf import read_pdf
    from tests.test_hostile_corpus import flate_bomb_pdf

    bomb = flate_bomb_pdf(tmp_path / "bomb.pdf", 64)  # 64 MB of content in a ~65 KB file
    with pytest.raises(SkipFile, match="inflate to more than 50 MB"):
        read_pdf(bomb)
    assert [p.text for p in read_pdf(flate_bomb_pdf(tmp_path / "small.pdf", 1))] == ["flate bomb page"]

    from reportlab.pdfgen.canvas import Canvas

    canvas = Canvas(str(tmp_path / "compressed.pdf"), pageCompression=1)  # every page a small Flate stream
    for page in range(50):
        canvas.drawString(40, 800, f"Compressed page {chr(65 + page % 26) * (1 + page // 26)} about the widget.")
        canvas.showPage()
    canvas.save()
    assert len(read_pdf(tmp_path / "compressed.pdf")) == 50
