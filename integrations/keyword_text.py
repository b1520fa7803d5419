"""Text normalisation for BM25, done here so Milvus Lite and a Milvus server score the same terms.

Milvus Lite's analyzers only split on word boundaries (no stemming), and
technical text is full of identifiers. Each word is lowercased and stemmed;
identifiers are kept whole and also split into parts (snake_case, camelCase,
dotted.names, --cli-flags, paths), so "global placement" finds
``global_placement`` and ``-density`` finds "density".
"""

from __future__ import annotations

import re
from functools import lru_cache

from nltk.stem.snowball import EnglishStemmer

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/:]*[A-Za-z0-9]|[A-Za-z0-9]")
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
_STEMMER = EnglishStemmer()
#: Metadata key (and Milvus field) holding a chunk's BM25 terms.
KEYWORD_FIELD = "bm25_text"
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "does",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "so",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
    ]
)


@lru_cache(maxsize=200_000)
def _terms(token: str) -> tuple[str, ...]:
    lower = token.lower()
    parts = [p.lower() for p in _PARTS.findall(token)]
    terms = []
    if len(parts) > 1:
        terms.append(re.sub(r"[^a-z0-9]", "", lower))  # the identifier as one term
    for part in parts or [lower]:
        if part not in STOPWORDS:
            terms.append(_STEMMER.stem(part))
    return tuple(terms)


def keyword_text(text: str) -> str:
    """Space-separated BM25 terms for a passage or a query."""
    return " ".join(term for token in _TOKEN.findall(text) for term in _terms(token))
