"""The context a retrieved chunk is shown with: its enclosing heading section when small enough, else nearby chunks.

docs/design-notes.md says why and how the section part is decided at ingestion."""

from __future__ import annotations

from collections.abc import Sequence

#: Metadata key of a piece's (and its chunks') context span: "low-high" piece numbers of the same file.
CONTEXT_KEY = "context"
#: Largest context, in words, that a hit grows into.
CONTEXT_WORDS = 250
SECTION_SEPARATOR = " > "
#: Metadata key of a context's section paths, in file order, when it spans more than one section.
SECTIONS_KEY = "sections"


def section_path(section: str) -> tuple[str, ...]:
    return tuple(section.split(SECTION_SEPARATOR)) if section else ()


def words(text: str) -> int:
    return len(text.split())


def section_spans(sections: Sequence[str], texts: Sequence[str], budget: int = CONTEXT_WORDS) -> list[str | None]:
    """Per piece (a file's heading sections in order), the span of the largest enclosing section within ``budget`` words
    ("low-high"), or None when even its own section is over budget or it has no heading (shown as a window instead)."""
    paths = [section_path(s) for s in sections]
    sizes = [words(t) for t in texts]
    spans: list[str | None] = []
    for i, path in enumerate(paths):
        best = None
        for depth in range(len(path), 0, -1):
            prefix = path[:depth]
            low, high = i, i
            while low > 0 and paths[low - 1][:depth] == prefix:
                low -= 1
            while high + 1 < len(paths) and paths[high + 1][:depth] == prefix:
                high += 1
            if sum(sizes[low : high + 1]) > budget:
                break
            best = f"{low}-{high}"
        spans.append(best)
    return spans


def enclosing_section(paths: Sequence[str]) -> str:
    """The longest section path that every one of ``paths`` lies in ("" when they share none)."""
    common: list[str] = []
    for level in zip(*(section_path(p) for p in paths), strict=False):
        if len(set(level)) > 1:
            break
        common.append(level[0])
    return SECTION_SEPARATOR.join(common)


def quoted_section(paths: Sequence[str], headings: Sequence[str]) -> str:
    """The section of quotes taken from a context spanning ``paths``, each quote under one of ``headings``.

    A quote above every heading lies in the first path; one under a heading that is no section in all of them.
    """
    found = []
    for heading in headings:
        matches = [p for p in paths if heading and section_path(p)[-1:] == (heading,)]
        found.extend(matches[:1] if matches else (paths[:1] if not heading else paths))
    return enclosing_section(found)


def parse_span(value: object) -> range | None:
    """The piece numbers of a stored span, or None when absent or malformed (indexes built before spans existed)."""
    try:
        low, high = (int(part) for part in str(value).split("-"))
    except ValueError:
        return None
    return range(low, high + 1) if 0 <= low <= high else None


def join_texts(texts: Sequence[str], same_piece: Sequence[bool]) -> str:
    """Chunk texts in file order as one text; the overlap of chunk i with chunk i-1 of the same piece appears once."""
    out = ""
    for i, text in enumerate(texts):
        if i == 0:
            out = text
        elif same_piece[i]:
            shared = overlap(out, text)
            out += text[shared:] if shared else "\n" + text
        else:
            out += "\n\n" + text
    return out


def overlap(left: str, right: str, longest: int = 2000) -> int:
    """Length of the longest suffix of ``left`` that starts ``right`` (at least 20 characters, else 0)."""
    for size in range(min(len(left), len(right), longest), 19, -1):
        if left.endswith(right[:size]):
            return size
    return 0
