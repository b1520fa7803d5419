"""Errors shared by the answer backends and the fallback chain, and the per-question deadline.

A backend that cannot answer in time raises :class:`BackendUnavailableError`
(the fallback chain then tries the next one); a stream that breaks after its
first token raises :class:`StreamInterruptedError` (never silently truncated).
The deadline of the question being answered travels in a context variable so
that retries deep inside a backend respect it without new call parameters.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("docsrag_question_deadline", default=None)


class BackendUnavailableError(RuntimeError):
    """A backend could not answer (retries exhausted, deadline reached, bad reply); the next one may."""


class RetryExhaustedError(BackendUnavailableError):
    """Retrying (429 Retry-After, 503 loading) would not fit in the deadline or the retry budget."""

    def __init__(self, message: str, *, status: int | None = None, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.wait_s = wait_s


class StreamInterruptedError(RuntimeError):
    """An answer stream failed after tokens were already delivered; the partial answer is incomplete."""


class AllBackendsFailedError(RuntimeError):
    """Every member of a fallback chain failed."""


@contextlib.contextmanager
def question_deadline(deadline: float) -> Iterator[None]:
    """Make ``deadline`` (a ``time.monotonic()`` value) the deadline of the code inside the block."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def current_deadline(default_budget_s: float) -> float:
    """The active question's deadline, or now + ``default_budget_s`` outside of one."""
    deadline = _DEADLINE.get()
    return deadline if deadline is not None else time.monotonic() + default_budget_s


def remaining(deadline: float) -> float:
    return deadline - time.monotonic()
