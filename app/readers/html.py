"""HTML: keep the main content only, convert it to Markdown, then split by heading like Markdown files."""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, Tag
from markdownify import MarkdownConverter

from app.readers.base import Piece
from app.readers.markdown import split_markdown

# Tried in order; the first match is the page's main content.
_MAIN_SELECTORS = ('[role="main"]', "main", "article", "body")
_ALWAYS_DROP = ("script", "style", "noscript", "template", "button", "nav", "aside", "a.headerlink")
_ALWAYS_DROP_ROLES = ('[role="navigation"]', '[role="search"]')
_CHROME = ("header", "footer")
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_LANGUAGE_CLASS = re.compile(r"^(?:language|lang|highlight)-([\w+#.-]+)$")
_NO_LANGUAGE = {"default", "none", "text", "plain"}
_PERMALINK_TEXT = {"¶", "#", "§", "🔗", "⚓"}
_BLANK_RUNS = re.compile(r"\n{3,}")


def read_html(text: str) -> list[Piece]:
    """Main content of an HTML page as Markdown pieces, one per heading section."""
    markdown = html_to_markdown(text)
    return split_markdown(markdown)


def html_to_markdown(text: str) -> str:
    soup = BeautifulSoup(text, "html.parser")
    root = _main_content(soup)
    _drop_chrome(root, keep_titled=root.name != "body")
    markdown = _converter().convert_soup(root).replace("\xa0", " ")
    return _BLANK_RUNS.sub("\n\n", markdown).strip()


def _main_content(soup: BeautifulSoup) -> Tag:
    for selector in _MAIN_SELECTORS:
        found = soup.select_one(selector)
        if found is not None:
            return found
    return soup


def _drop_chrome(root: Tag, keep_titled: bool) -> None:
    """Remove navigation, scripts and page chrome.

    Inside a selected main element a <header> holding the page's heading (HTML5 article style)
    is content, so it is kept; in the <body> fallback every header/footer is site chrome.
    """
    for element in root.select(", ".join(_ALWAYS_DROP + _ALWAYS_DROP_ROLES)):
        element.decompose()
    for anchor in root.select(", ".join(f'{h} a[href^="#"]' for h in _HEADINGS)):
        if anchor.get_text(strip=True) in _PERMALINK_TEXT:  # permalink markers of non-Sphinx generators
            anchor.decompose()
    for element in root.find_all(_CHROME):
        if not (keep_titled and element.find(_HEADINGS)):
            element.decompose()


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
