"""The context a retrieved chunk is shown with: its enclosing heading section when small enough, else nearby chunks.

Chunks are small so that each embeds well, but a chunk is often only part of
what answers a question (a command's description without its options table).
So a hit grows into its *context*: the largest enclosing heading section that
fits in :data:`CONTEXT_WORDS` words, else a window of neighbouring chunks of
the same piece (a PDF page, a long section).

The section part is decided at ingestion, where every piece of the file is at
hand: each piece records the span of pieces its context covers
(:data:`CONTEXT_KEY`, ``"low-high"``). The span is part of the piece's
metadata, hence of its docstore hash, so when an edit elsewhere in the file
changes a piece's span, that piece is re-chunked too and the stored spans stay
true. At query time the retriever fetches the span's chunks by primary key
(cheap on every Milvus tier) instead of scanning for neighbours.
"""

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
    """Per piece, the span of the largest enclosing heading section within ``budget`` words ("low-high"), or None.

    Pieces are a file's heading sections in order; a section at depth d is the
    run of consecutive pieces whose heading path starts with the same d
    headings. None means that even the piece's own section is over budget (or
    it has no heading): it is shown as a window of its chunks instead.
    """
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

    A quote's section is the path whose last heading is the one it sits under; a quote above every heading of the
    context lies in its first section; one under a heading that is no section (deeper than the split) in all of them.
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
    """Chunk texts in file order as one text; the overlap between neighbouring chunks of one piece appears once.

    ``same_piece[i]`` says whether chunk i continues the piece of chunk i-1.
    """
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
