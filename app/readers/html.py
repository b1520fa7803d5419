"""HTML: keep the main content only, convert it to Markdown, then split by heading like Markdown files."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

from app.readers.base import Piece
from app.readers.markdown import split_markdown

# Tried in order; the first match is the page's main content.
_MAIN_SELECTORS = ('[role="main"]', "main", "article", "body")
# Embedded frames and objects are dropped, never fetched: a page cannot make ingestion read another file or URL.
_ALWAYS_DROP = ("script", "style", "noscript", "template", "button", "nav", "aside", "iframe", "frame", "object", "embed")
_ALWAYS_DROP_MARKS = ("a.headerlink", ".viewcode-link", '[role="navigation"]', '[role="search"]')
# Sphinx API entries: <dl class="py function"><dt>signature</dt><dd>description</dd></dl> (any domain).
_API_ENTRY = re.compile(
    r"^(function|class|method|classmethod|staticmethod|attribute|property|data|exception|decorator|option|envvar|"
    r"describe|object|macro|member|type|var|struct|union|enum|enumerator|cmdoption)$"
)
#: Pages nesting deeper are read as plain text; real pages nest a few dozen levels.
MAX_DEPTH = 100
_SPACES = re.compile(r"\s+")
_API_MARK = "data-api-entry"
_CHROME = ("header", "footer")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_LANGUAGE_CLASS = re.compile(r"^(?:language|lang|highlight)-([\w+#.-]+)$")
_NO_LANGUAGE = {"default", "none", "text", "plain"}
_PERMALINK_TEXT = {"¶", "#", "§", "🔗", "⚓"}
_BLANK_RUNS = re.compile(r"\n{3,}")


def read_html(text: str) -> list[Piece]:
    """Main content of an HTML page as Markdown pieces, one per heading section."""
    return split_markdown(html_to_markdown(text))


def html_to_markdown(text: str) -> str:
    soup = BeautifulSoup(text, "html.parser")
    if _depth(soup) > MAX_DEPTH:
        # html.parser does not close implied end tags: a page of unclosed <li> nests thousands of levels, deeper than
        # the recursive walks below (soupsieve, markdownify) can go. Such a page is kept as its plain text.
        for element in soup.find_all(["script", "style", "template"]):
            element.decompose()
        return _BLANK_RUNS.sub("\n\n", soup.get_text("\n").replace("\xa0", " ")).strip()
    root = _main_content(soup)
    _drop_chrome(root, keep_titled=root.name != "body")
    _api_entries_as_headings(soup, root)
    markdown = _converter().convert_soup(root).replace("\xa0", " ")
    return _BLANK_RUNS.sub("\n\n", markdown).strip()


def _depth(soup: BeautifulSoup) -> int:
    """How deep elements nest, measured without recursion."""
    depth = {id(soup): 0}
    deepest = 0
    for element in soup.descendants:  # iterative, in document order
        if isinstance(element, Tag):
            depth[id(element)] = level = depth[id(element.parent)] + 1
            deepest = max(deepest, level)
    return deepest


def _main_content(soup: BeautifulSoup) -> Tag:
    for selector in _MAIN_SELECTORS:
        found = soup.select_one(selector)
        if found is not None:
            return found
    return soup


def _drop_chrome(root: Tag, keep_titled: bool) -> None:
    """Remove navigation, scripts and page chrome; with ``keep_titled`` (a main element, not the <body> fallback) a
    <header> holding the page's heading is content (HTML5 article style)."""
    for element in root.select(", ".join(_ALWAYS_DROP + _ALWAYS_DROP_MARKS)):
        element.decompose()
    for anchor in root.select(", ".join(f'{h} a[href^="#"]' for h in _HEADINGS)):
        if anchor.get_text(strip=True) in _PERMALINK_TEXT:  # permalink markers of non-Sphinx generators
            anchor.decompose()
    for element in root.find_all(_CHROME):
        if not (keep_titled and element.find(_HEADINGS)):
            element.decompose()


def _api_entries_as_headings(soup: BeautifulSoup, root: Tag) -> None:
    """Each API entry's signature becomes a heading below the page heading before it (one more level per nesting)."""
    entries = [dl for dl in root.find_all("dl") if any(_API_ENTRY.match(c) for c in dl.get("class") or [])]
    ids = {id(entry) for entry in entries}  # Tag equality compares markup, not identity
    for entry in entries:
        depth = 1 + sum(1 for parent in entry.parents if id(parent) in ids)
        page_heading = entry.find_previous(lambda tag: tag.name in _HEADINGS and not tag.has_attr(_API_MARK))
        level = min((int(page_heading.name[1]) if page_heading is not None else 1) + depth, 6)
        for term in entry.find_all("dt", recursive=False):
            # Whitespace-only strings are the markup's line breaks between signature parts, not separators
            signature = _SPACES.sub(" ", "".join(text for text in term.strings if text.strip())).strip()
            if signature:
                heading = soup.new_tag(f"h{level}", attrs={_API_MARK: ""})
                heading.string = signature
                term.replace_with(heading)
        for description in entry.find_all("dd", recursive=False):
            description.name = "div"  # a definition would be indented, hiding the nested entries' headings
        entry.name = "div"


def _converter() -> MarkdownConverter:
    return MarkdownConverter(
        heading_style="ATX",
        bullets="-",
        escape_underscores=False,
        escape_asterisks=False,
        strip=["a", "img"],  # keep link text, drop URLs and image references
        table_infer_header=True,
        code_language_callback=_code_language,
    )


def _code_language(pre: Tag) -> str:
    """Language of a <pre> block from Sphinx (div.highlight-python), Pandoc or highlight.js classes."""
    candidates = [pre, pre.find("code"), pre.parent, pre.parent.parent if pre.parent else None]
    for element in candidates:
        if not isinstance(element, Tag):
            continue
        for css_class in element.get("class") or []:
            match = _LANGUAGE_CLASS.match(css_class)
            if match and match.group(1).lower() not in _NO_LANGUAGE:
                return match.group(1).lower()
    return ""
