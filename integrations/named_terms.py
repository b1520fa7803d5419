"""Names in a question (acronyms, products, identifiers) whose absence from the docs says they do not cover it.

Names: words with two or more capitals, capitalised words inside a sentence, code identifiers; not a name given as an
example of the user's own data ("a path like docs/intro.txt"). docs/design-notes.md says why."""

from __future__ import annotations

import re

from integrations.keyword_text import STOPWORDS, keyword_text

#: Words and identifiers; "/" separates alternatives, so it is not part of a token.
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_.:][A-Za-z0-9]+)*")
_IDENTIFIER = re.compile(r"[_.:]")
#: Characters after which a capitalised word starts a sentence or a quotation rather than naming something.
_SENTENCE_START = ".?!:;\"'`(["
#: Names checked per question (each is one more query in the BM25 request).
MAX_NAMED_TERMS = 6
#: Words that introduce an example, up to a few words before the name.
_EXAMPLE = re.compile(r"\b(?:like|e\.g\.?|eg|such as|for (?:example|instance)|say)\W+(?:\S+\W+){0,2}$", re.I)


def named_terms(question: str) -> list[str]:
    """The question's names, in order, each once; only those with BM25 terms (so they can be looked up)."""
    names: list[str] = []
    for match in _TOKEN.finditer(question):
        word = match.group()
        before = question[: match.start()].rstrip()
        sentence_start = not before or before[-1] in _SENTENCE_START
        capitals = sum(c.isupper() for c in word)
        named = capitals >= 2 or bool(_IDENTIFIER.search(word)) or (word[0].isupper() and not sentence_start)
        if named and (word.lower() in ("e.g", "i.e") or _EXAMPLE.search(question[: match.start()])):
            continue
        if named and word.lower() not in STOPWORDS and keyword_text(word) and word not in names:
            names.append(word)
    return names[:MAX_NAMED_TERMS]
