"""Markdown: one piece per heading section, carrying the heading path."""

from __future__ import annotations

import re

from app.readers.base import Piece

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")


def split_markdown(text: str) -> list[Piece]:
    """Split Markdown at ATX headings (ignoring '#' lines inside code fences)."""
    pieces: list[Piece] = []
    path: list[tuple[int, str]] = []
    lines: list[str] = []
    in_fence = False

    def flush() -> None:
        body = "\n".join(lines).strip()
        if body:
            pieces.append(Piece(text=body, section=" > ".join(title for _, title in path)))
        lines.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        match = None if in_fence else _HEADING.match(line)
        if match:
            flush()
            level, title = len(match.group(1)), match.group(2).strip()
            while path and path[-1][0] >= level:
                path.pop()
            path.append((level, title))
        lines.append(line)
    flush()
    return pieces
