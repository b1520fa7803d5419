"""reStructuredText without docutils: one piece per section, with the heading path.

A title is a line underlined (and optionally overlined) by one repeated punctuation character,
at least as long as the title. As in docutils, heading levels follow the order in which each
adornment style (overline or not, character) first appears. Directives, literal blocks and
other markup stay in the text as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.readers.base import Piece

_MIN_ADORNMENT = 2
_ADORNMENT = re.compile(r"^([!-/:-@\[-`{-~])\1*\s*$")
# Inline markup removed from titles in the section path: :role:`x`, ``x``, `x`_, **x**, *x*
_INLINE_MARKUP = (
    (re.compile(r":[\w.:+-]+:(?=`)"), ""),
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r"`([^`]+?)`_{0,2}"), r"\1"),
    (re.compile(r"\*\*(.+?)\*\*"), r"\1"),
    (re.compile(r"(?<!\w)\*(\S.*?)\*(?!\w)"), r"\1"),
)


@dataclass(frozen=True)
class _Title:
    text: str
    style: tuple[bool, str]  # (has overline, adornment character)
    consumed: int  # lines taken by the title and its adornment(s)


def split_rst(text: str) -> list[Piece]:
    """Split reST at section titles; text before the first title gets an empty section."""
    lines = text.splitlines()
    styles: list[tuple[bool, str]] = []
    path: list[tuple[int, str]] = []
    pieces: list[Piece] = []
    body: list[str] = []

    def flush() -> None:
        content = "\n".join(body).strip()
        if content:
            pieces.append(Piece(text=content, section=" > ".join(title for _, title in path)))
        body.clear()

    i = 0
    after_title = False
    while i < len(lines):
        title = _title_at(lines, i) if (i == 0 or after_title or not lines[i - 1].strip()) else None
        if title is None:
            body.append(lines[i])
            after_title = False
            i += 1
            continue
        flush()
        if title.style not in styles:
            styles.append(title.style)
        level = styles.index(title.style) + 1
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, _plain_title(title.text)))
        body.append(title.text)
        after_title = True
        i += title.consumed
    flush()
    return pieces


def _plain_title(title: str) -> str:
    for pattern, replacement in _INLINE_MARKUP:
        title = pattern.sub(replacement, title)
    return title


def _adornment_char(line: str) -> str | None:
    match = _ADORNMENT.match(line)
    return match.group(1) if match and len(line.rstrip()) >= _MIN_ADORNMENT else None


def _is_title_text(line: str) -> bool:
    """Titles start in column 1 and are not themselves adornment lines."""
    return bool(line.strip()) and not line[0].isspace() and _adornment_char(line) is None


def _title_at(lines: list[str], i: int) -> _Title | None:
    """The section title starting at line i, if any (overline + title + underline, or title + underline)."""
    over = _adornment_char(lines[i])
    if over is not None and i + 2 < len(lines):
        title = lines[i + 1].strip()
        under = _adornment_char(lines[i + 2])
        width = len(lines[i].rstrip())
        if title and under == over and width >= len(title) and len(lines[i + 2].rstrip()) >= len(title):
            return _Title(title, (True, over), 3)
    if i + 1 < len(lines) and _is_title_text(lines[i]):
        under = _adornment_char(lines[i + 1])
        title = lines[i].strip()
        if under is not None and len(lines[i + 1].rstrip()) >= len(title):
            return _Title(title, (False, under), 2)
    return None
