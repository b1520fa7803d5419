"""Text normalisation for BM25, done here so Milvus Lite and a Milvus server score the same terms.

Prose words are lowercased and stemmed; code identifiers stay whole and exact (docs/design-notes.md says why)."""

from __future__ import annotations

import re
from functools import lru_cache

from nltk.stem.snowball import EnglishStemmer

_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/:]*[A-Za-z0-9]|[A-Za-z0-9]")
#: What makes a token a code identifier rather than a (possibly hyphenated) word.
_IDENTIFIER = re.compile(r"[_.:/]|[a-z][A-Z]")
_WORD_PARTS = re.compile(r"[a-z]+|[0-9]+")
_STEMMER = EnglishStemmer()
#: Metadata key (and Milvus field) holding a chunk's BM25 terms.
KEYWORD_FIELD = "bm25_text"
_STOPWORDS = (
    "a an and are as at be by can do does for from has have how i if in into is it its of on or so such that the "
    "their then there these this to was what when where which while who why will with you your"
)
STOPWORDS = frozenset(_STOPWORDS.split())

#: Words that say how a question is asked rather than what it is about: the stop words and question phrasing.
#: A question part needs words outside them (integrations.hybrid_retriever); a follow-up never carries them (app.chat).
_PHRASING = (
    "about accomplish achieve after also any anything been before being but could designer developer developers did "
    "done during else engineer engineers explain get give go happen happens he her here his it's know like many may "
    "me mean means might more much must my need needs no not one ones other our please possible possibly proceed "
    "process shall she should show some someone step steps tell theirs them they those us use user users using "
    "utilise utilize want wants way ways we were what's whats whom would"
)
QUESTION_WORDS = STOPWORDS | frozenset(_PHRASING.split())


@lru_cache(maxsize=200_000)
def _terms(token: str) -> tuple[str, ...]:
    lower = token.lower()
    if _IDENTIFIER.search(token):
        return (re.sub(r"[^a-z0-9]", "", lower),)
    return tuple(_STEMMER.stem(part) for part in _WORD_PARTS.findall(lower) if part not in STOPWORDS)


def keyword_text(text: str) -> str:
    """Space-separated BM25 terms for a passage or a query."""
    return " ".join(term for token in _TOKEN.findall(text) for term in _terms(token))


def content_terms(text: str) -> list[str]:
    """The BM25 terms of a question's words that say what it is about (its phrasing dropped), in order, each once."""
    words = " ".join(t for t in _TOKEN.findall(text) if t.lower() not in QUESTION_WORDS)
    return list(dict.fromkeys(keyword_text(words).split()))
