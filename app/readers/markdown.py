"""Markdown: one piece per heading section, carrying the heading path."""

from __future__ import annotations

import re

from app.readers.base import Piece

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
#: A code fence line: indentation (list items indent theirs), then 3+ backticks or tildes, then the info string (e.g. "python").
_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


def closes(line: str, opening: str) -> bool:
    """The line closes a block opened by ``opening``: the same character, at least as many, nothing after (CommonMark)."""
    match = _FENCE.match(line)
    return bool(match) and match["fence"][0] == opening[0] and len(match["fence"]) >= len(opening) and not match["info"].strip()


def split_markdown(text: str) -> list[Piece]:
    """Split Markdown at ATX headings (ignoring '#' lines inside code fences)."""
    pieces: list[Piece] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    fence = ""  # the open code fence's backticks or tildes

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            pieces.append(Piece(text=body, section=" > ".join(title for _, title in path)))
        lines.clear()

    for line in text.splitlines():
        opening = None if fence else _FENCE.match(line)
        if fence and closes(line, fence):
            fence = ""
        elif opening and not (opening["fence"][0] == "`" and "`" in opening["info"]):  # "```x```" is inline code
            fence = opening["fence"]
        match = None if fence else _HEADING.match(line)
        if match:
            flush()
            level, title = len(match.group(1)), match.group(2).strip()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
        lines.append(line)
    flush()
    return pieces
