"""The deadline of the question being answered, in a context variable, so that retries deep inside a backend respect
it without new call parameters (the fallback chain sets it; HTTP backends cap their timeouts and waits by it)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from contextvars import ContextVar

_DEADLINE: ContextVar[float | None] = ContextVar("docsrag_question_deadline", default=None)


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
