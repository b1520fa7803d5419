"""What the query path learns about one question, carried in a context variable (docs/design-notes.md).

The retriever, evidence filter, ranking stages and synthesizer write it; the query engine copies it into the response
metadata. It is opened by the outermost question component's instrumentation span (:class:`QuestionSpans`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.span import SimpleSpan
from llama_index.core.instrumentation.span_handlers import BaseSpanHandler
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.response_synthesizers.base import BaseSynthesizer

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
    #: The evidence filter has judged this question (the synthesizer judges it itself otherwise).
    evidence_checked: bool = False
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
    """The context of the question being answered; raises outside of one."""
    context = _CURRENT.get()
    if context is None:
        raise RuntimeError(
            "no question is open: call the query engine, retriever, postprocessor or synthesizer "
            "(each opens one), or wrap the code in `with question_context():`"
        )
    return context


#: The components whose outermost call is a question.
_QUESTION_STARTS = (BaseQueryEngine, BaseRetriever, BaseNodePostprocessor, BaseSynthesizer)


class _QuestionSpan(SimpleSpan):
    token: Any = None


class QuestionSpans(BaseSpanHandler[_QuestionSpan]):
    """Opens a question context when the outermost question component's span opens, and closes it with that span."""

    @classmethod
    def class_name(cls) -> str:
        return "QuestionSpans"

    def new_span(self, id_, bound_args, instance=None, parent_span_id=None, tags=None, **kwargs) -> _QuestionSpan | None:
        if _CURRENT.get() is not None or not isinstance(instance, _QUESTION_STARTS):
            return None
        return _QuestionSpan(id_=id_, parent_id=parent_span_id, token=_CURRENT.set(QuestionContext()))

    def prepare_to_exit_span(self, id_, bound_args, instance=None, result=None, **kwargs) -> _QuestionSpan | None:
        span = self.open_spans.get(id_)
        if span is not None:
            # LlamaIndex's sync and async wrappers close a span in the context it opened in; a method returning a
            # Future closes it in a callback, whose context ends with it.
            with contextlib.suppress(ValueError):
                _CURRENT.reset(span.token)
        return span

    def prepare_to_drop_span(self, id_, bound_args, instance=None, err=None, **kwargs) -> _QuestionSpan | None:
        return self.prepare_to_exit_span(id_, bound_args, instance)


def _listen() -> None:
    root = get_dispatcher()
    if not any(isinstance(h, QuestionSpans) for h in root.span_handlers):
        root.add_span_handler(QuestionSpans())


_listen()
