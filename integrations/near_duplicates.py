"""Near-duplicate passages (an HTML page and its ``.rst.txt`` source, a page copied into two manuals): most of the word
trigrams of an earlier result; retrieval shows them once, listing the other locations (metadata ``DUPLICATES_KEY``)."""

from __future__ import annotations

import re
import unicodedata

#: Metadata key: the other places (``{"source", "section"?, "page"?}``) a result's text was also found.
DUPLICATES_KEY = "also_in"
#: Share of a passage's trigrams found in an earlier result that makes it the same text.
NEAR_DUPLICATE_SHARE = 0.8
_WORD = re.compile(r"\w+")


def words(text: str) -> list[str]:
    """The one word tokeniser of trigram comparisons (near-duplicates, citation checks, evaluation): NFKC, lowercase,
    runs of word characters (so curly and straight quotes split words alike)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def shingles(text: str) -> frozenset[tuple[str, ...]]:
    """The lowercase word trigrams of a text (its one n-gram when it has fewer than three words)."""
    tokens = words(text)
    if len(tokens) < 3:
        return frozenset({tuple(tokens)}) if tokens else frozenset()
    return frozenset(zip(tokens, tokens[1:], tokens[2:], strict=False))


def already_shown(text: frozenset, shown: frozenset, share: float = NEAR_DUPLICATE_SHARE) -> bool:
    """Most of ``text``'s trigrams are already in ``shown`` (a longer passage is not hidden behind a short one it contains)."""
    return bool(text) and len(text & shown) >= share * len(text)


def location(metadata: dict) -> dict:
    """Where a passage is: its source and, when known, section and page."""
    place = {"source": str(metadata.get("source", ""))}
    for key in ("section", "page"):
        if metadata.get(key) not in (None, ""):
            place[key] = metadata[key]
    return place
