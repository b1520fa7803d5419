"""What the query path learns about one question, carried in a context variable.

The retriever records how close the question comes to the index and which of
its names no passage contains, the evidence filter decides whether to refuse,
any stage that degrades (keyword-only search, a reranker keeping the fused
order) adds a notice, and the synthesizer adds the skipped answer backends. The
query engine opens one context per question and copies it into the response
metadata. It travels like the question's deadline in
:mod:`integrations.backend_errors`: no extra call parameters, nothing left on
the nodes, nothing shared between threads.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_CURRENT: ContextVar[QuestionContext | None] = ContextVar("docsrag_question", default=None)


@dataclass
class QuestionContext:
    """One question's facts; the response metadata is built from them."""

    #: The whole question's best cosine similarity over the index (None when it could not be embedded).
    dense_score: float | None = None
    #: Names in the question (acronyms, products, identifiers) that no passage of the index contains.
    missing_names: list[str] = field(default_factory=list)
    #: The evidence was too weak to answer from: the answer says the docs do not cover the question.
    weak_evidence: bool = False
    notices: list[str] = field(default_factory=list)
    #: One reason per answer backend that was skipped.
    fallbacks: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def notice(self, text: str) -> None:
        if text not in self.notices:
            self.notices.append(text)

    def metadata(self) -> dict[str, Any]:
        """The response metadata keys this context owns."""
        return {
            "weak_evidence": self.weak_evidence,
            "best_dense_score": self.dense_score,
            "notices": list(self.notices),
            "fallbacks": list(self.fallbacks),
            "timings_ms": dict(self.timings_ms),
        }


@contextlib.contextmanager
def question_context() -> Iterator[QuestionContext]:
    """A fresh context for the code inside the block (one question)."""
    context = QuestionContext()
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def current_question() -> QuestionContext:
    """The context of the question being answered; outside of one (a component used on its own), a throwaway one."""
    return _CURRENT.get() or QuestionContext()
