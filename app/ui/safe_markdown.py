"""Document and answer text as Markdown that reads like the docs but can make the page do nothing (docs/security.md).

Code passes through untouched; everything else has ``\\ [ ] < $ : ~`` escaped and bare URLs and e-mail addresses broken
by a word joiner (U+2060), so no link, image, HTML tag or directive can open. Highlights wrap whole words outside code."""

from __future__ import annotations

import re
from collections.abc import Callable

from app.shown_text import escape_bidi
from integrations.keyword_text import keyword_text

HIGHLIGHT = ":orange-background[{}]"
HEADING_SHIFT = 3  # a passage's "# Title" becomes a level-4 heading, under the page's own
_FULL_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")
_LIVE = re.compile(r"([\\\[\]<$:~])")  # what links, images, HTML, autolinks, math, directives and ~~~ fences start with
# GFM links bare URLs after parsing (escapes are gone by then): a word joiner (U+2060) after the scheme or "www" stops it.
_BARE_URL = re.compile(r"\b(https?|ftp|www)(?=://|\.)", re.IGNORECASE)
# Inline images and links as the words they carry (then escaped like all text): "[image: alt]", "text (url)".
_IMAGE = re.compile(r"!\[([^\]\n]*)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)\n]*)?\)")
_LINK = re.compile(r"\[([^\]\n]+)\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)\n]*)?\)")
# GFM also links e-mail addresses (and mailto:/xmpp: ones) after parsing: a word joiner after the "@" stops it.
_EMAIL_AT = re.compile(r"@(?=[\w-])")
_TOKEN = re.compile(r"[A-Za-z0-9][\w.\-/]*[A-Za-z0-9]|\w+")
_CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)")
_FENCE = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?=\s|$)")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-+:?\s*(?:\|\s*:?-+:?\s*)*\|?\s*$")  # | :--- | ---: | (only | : - and spaces)
_LIST_ITEM = re.compile(r"^\s*(?:[-*+]|\d{1,9}[.)])\s")
_HEADING_MARK = re.compile(r"(?:^|\s)#{1,6}(?=\s)")
# Markdown that a one-line quote shows as plain text: code fences (with their language), strong emphasis, a leading
# list bullet, and backslash escapes (what the rendered docs show without the backslash).
_FENCE_RUN = re.compile(r"(?:`{3,}|~{3,})[\w+#.-]*")
_STRONG = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_BULLET = re.compile(r"^(?:[-*+]|\d{1,9}[.)])\s+")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~<>$:])")


def _unlinked(text: str) -> str:
    text = _IMAGE.sub(lambda m: f"[image: {m.group(1)}]" if m.group(1).strip() else "[image]", text)
    text = _LINK.sub(lambda m: f"{m.group(1)} ({m.group(2)})" if m.group(2) else m.group(1), text)
    return _EMAIL_AT.sub("@\u2060", _BARE_URL.sub("\\1\u2060", text))


def escape(text: str) -> str:
    """Plain text shown literally by st.markdown (no emphasis, links, math or colour directives, no reordering: names,
    notices and snippets)."""
    return _FULL_SPECIAL.sub(r"\\\1", _unlinked(escape_bidi(text)))


def neutralise(text: str) -> str:
    """Markdown text with links, images, HTML, autolinks, math and directives made literal; emphasis and tables kept."""
    return _LIVE.sub(r"\\\1", _unlinked(text))


def _highlighter(question: str | None, escaper: Callable[[str], str]) -> Callable[[str], str]:
    """Escape a text run, wrapping the words that match the question (same stem, as BM25 sees them)."""
    wanted = set(keyword_text(question).split()) if question else set()

    def run(text: str) -> str:
        if not wanted:
            return escaper(text)
        text = _unlinked(text)  # before splitting into words, which would hide "http" from "://"
        out, position = [], 0
        for match in _TOKEN.finditer(text):
            word = match.group(0)
            out.append(escaper(text[position : match.start()]))
            terms = set(keyword_text(word).split())
            out.append(HIGHLIGHT.format(escaper(word)) if terms & wanted else escaper(word))
            position = match.end()
        out.append(escaper(text[position:]))
        return "".join(out)

    return run


def _inline(line: str, run: Callable[[str], str], ticks_escaped: bool = False) -> str:
    """A line with its code spans kept as they are and the text between them passed through ``run``
    (``ticks_escaped``: ``run`` already escapes backticks)."""
    out, position = [], 0
    for match in _CODE_SPAN.finditer(line):
        out.append(run(line[position : match.start()]))
        out.append(match.group(0))
        position = match.end()
    rest = run(line[position:])
    out.append(rest if ticks_escaped else rest.replace("`", "\\`"))  # an unpaired backtick must not pair with one on another line
    return "".join(out)


def snippet(text: str, question: str | None = None) -> str:
    """A quoted snippet on one line: code spans as code, other Markdown as the plain text it renders to, question
    words highlighted; nothing shows an escape character."""
    flat = _FENCE_RUN.sub(" ", " ".join(text.split()))
    flat = _BULLET.sub("", _STRONG.sub(r"\2", _HEADING_MARK.sub(" ", flat)).strip())
    run = _highlighter(question, escape)
    return _inline(" ".join(flat.split()), lambda part: run(_MD_ESCAPE.sub(r"\1", part)), ticks_escaped=True)


def _fence(lines: list[str]) -> list[str]:
    """Lines as a fenced code block whose fence no line inside can close."""
    longest = max((len(run) for line in lines for run in re.findall(r"`+", line)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, *lines, fence]


def passage(text: str, question: str | None = None) -> str:
    """A document passage (or an answer quoting one) as safe Markdown with demoted headings and highlights."""
    run = _highlighter(question, neutralise)
    lines = text.splitlines()
    out: list[str] = []
    index = 0
    previous_text = ""  # the last non-blank line outside code, to tell indented code from list continuations
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence and not (fence.group(2)[0] == "`" and "`" in fence.group(3)):
            # Re-emitted at column 0 with a fence no line inside can close: whatever container it was in, Markdown
            # then shows exactly these lines as code (a nested fence could otherwise end early and let text run live).
            indent, char, size = len(fence.group(1)), fence.group(2)[0], len(fence.group(2))
            end = index + 1
            while end < len(lines) and not re.match(rf"^ {{0,3}}{re.escape(char)}{{{size},}}\s*$", lines[end]):
                end += 1
            body = [raw[min(indent, len(raw) - len(raw.lstrip(" "))) :] for raw in lines[index + 1 : end]]
            block = _fence(body)
            block[0] += re.match(r"[\w+#.-]*", fence.group(3).strip()).group(0)  # the language, for highlighting
            out.extend(block)
            index, previous_text = end + 1, ""
            continue
        blank_before = not out or not out[-1].strip()
        if line.startswith(("    ", "\t")) and blank_before and not _LIST_ITEM.match(previous_text) and line.strip():
            end = index
            while end < len(lines) and (lines[end].startswith(("    ", "\t")) or not lines[end].strip()):
                end += 1
            block = [raw[4:] if raw.startswith("    ") else raw[1:] for raw in lines[index:end]]
            while block and not block[-1].strip():
                block.pop()
            out.extend([*_fence(block), ""])
            index, previous_text = end, ""
            continue
        underline = _SETEXT.match(line)
        if underline and previous_text and out and out[-1].strip() and not _LIST_ITEM.match(previous_text):
            level = 1 if underline.group(1)[0] == "=" else 2
            out[-1] = "#" * min(level + HEADING_SHIFT, 6) + " " + out[-1].lstrip()
            index, previous_text = index + 1, ""
            continue
        heading = _ATX.match(line)
        if _TABLE_RULE.match(line) and "|" in line:
            pass  # a table's alignment row: only | : - and spaces, kept as it is
        elif heading:
            level = len(heading.group(1))
            line = "#" * min(level + HEADING_SHIFT, 6) + _inline(line[heading.end() :], run)
        else:
            line = _inline(line, run)
        out.append(line)
        previous_text = line if line.strip() else previous_text
        index += 1
    return "\n".join(out)
