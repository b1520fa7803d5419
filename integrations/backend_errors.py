"""Errors shared by the answer backends and the fallback chain, and the per-question deadline.

A backend that cannot answer in time raises :class:`BackendUnavailableError`
(the fallback chain then tries the next one); a stream that breaks after its
first token raises :class:`StreamInterruptedError` (never silently truncated).
The deadline of the question being answered travels in a context variable so
that retries deep inside a backend respect it without new call parameters.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any

_DEADLINE: ContextVar[float | None] = ContextVar("docsrag_question_deadline", default=None)
# Anything shaped like a Hugging Face token or an Authorization value, even one we did not send.
_SECRET_SHAPES = re.compile(r"hf_[A-Za-z0-9]{30,}|(?i:bearer)\s+[^\s\"',;]+")
REDACTED = "[redacted]"


class BackendUnavailableError(RuntimeError):
    """A backend could not answer (retries exhausted, deadline reached, bad reply); the next one may."""


class BackendAuthError(BackendUnavailableError):
    """A backend refused the credentials (HTTP 401/403); the message names the backend and the fix."""


class RetryExhaustedError(BackendUnavailableError):
    """Retrying (429 Retry-After, 503 loading) would not fit in the deadline or the retry budget."""

    def __init__(self, message: str, *, status: int | None = None, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.wait_s = wait_s


class StreamInterruptedError(RuntimeError):
    """An answer stream failed after tokens were already delivered; the partial answer is incomplete."""


class AllBackendsFailedError(RuntimeError):
    """Every member of a fallback chain failed; ``fallbacks`` holds one reason per member."""

    def __init__(self, message: str, fallbacks: list[str] | None = None) -> None:
        super().__init__(message)
        self.fallbacks = list(fallbacks or [])


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


async def aiter_in_thread(stream: Iterator[Any]) -> AsyncIterator[Any]:
    """Consume a blocking iterator (a sync answer stream) from async code, one item per worker-thread hop."""
    done = object()
    while True:
        item = await asyncio.to_thread(next, stream, done)
        if item is done:
            return
        yield item


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without the given secrets and without anything shaped like a token or ``Bearer …``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_SHAPES.sub(REDACTED, text)


@contextlib.contextmanager
def redacted_errors(*secrets: str | None) -> Iterator[None]:
    """Scrub secrets from every exception leaving the block (and the exceptions it chains), then re-raise it.

    The one choke point for text derived from a server reply: a server may echo the
    ``Authorization`` header in an error body, and that text reaches notices, the
    fallback list, logs and tracebacks only through these exception objects.
    """
    try:
        yield
    except BaseException as exc:
        _scrub(exc, tuple(s for s in secrets if s), seen=set())
        raise


def _scrub(exc: BaseException, secrets: tuple[str, ...], seen: set[int]) -> None:
    if id(exc) in seen:
        return
    seen.add(id(exc))
    exc.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in exc.args)
    reply_message = _reply_error_message(exc)
    if reply_message is not None:
        exc.server_message = reply_message
    for name in ("server_message", "error", "msg"):  # HfHubHTTPError, ollama.ResponseError, JSONDecodeError
        value = getattr(exc, name, None)
        if isinstance(value, str):
            with contextlib.suppress(AttributeError, TypeError):
                setattr(exc, name, redact(value, secrets))
    for chained in (exc.__cause__, exc.__context__):
        if chained is not None:
            _scrub(chained, secrets, seen)


def _reply_error_message(exc: BaseException) -> str | None:
    """The message of an error body huggingface_hub does not read well: OpenAI's ``{"error": {"message": ...}}`` (kept
    as a dict repr) and FastAPI's ``{"detail": "..."}`` (dropped; OpenAI-compatible servers such as llama.cpp's send it)."""
    response = getattr(exc, "response", None)
    if response is None or not hasattr(exc, "server_message"):
        return None
    try:
        body = response.json()
    except (ValueError, AttributeError, RuntimeError):
        return None
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    message = error.get("message") if isinstance(error, dict) else body.get("detail") if error is None else None
    return message if isinstance(message, str) else None


def transient_errors() -> tuple[type[BaseException], ...]:
    """Exceptions after which the next backend should be tried (each client raises its own types), imported lazily."""
    import json

    errors: list[type[BaseException]] = [BackendUnavailableError, ConnectionError, TimeoutError, json.JSONDecodeError]
    try:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, TextGenerationError

        errors += [HfHubHTTPError, InferenceTimeoutError, TextGenerationError, httpx2.HTTPError]
    except ImportError:  # pragma: no cover - huggingface_hub is a core requirement
        pass
    try:
        import httpx
        import ollama

        errors += [ollama.ResponseError, httpx.HTTPError]
    except ImportError:  # pragma: no cover - ollama is a core requirement
        pass
    return tuple(errors)


def describe_failure(exc: BaseException) -> str:
    """A short, token-free reason for a failed backend call, chosen by exception type and status code."""
    return redact(_describe(exc))


def _describe(exc: BaseException) -> str:
    import json

    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    kind = type(exc).__name__
    if isinstance(exc, BackendUnavailableError):
        return str(exc)
    try:
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, TextGenerationError

        if isinstance(exc, OfflineModeIsEnabled):
            return "offline mode is on (HF_HUB_OFFLINE=1 blocks every Hugging Face request): unset it to use the API"

        if isinstance(exc, HfHubHTTPError) and status is not None:
            detail = (exc.server_message or "").strip().splitlines()
            return f"HTTP {status}" + (f": {detail[0][:160]}" if detail else "")
        if isinstance(exc, TextGenerationError):
            return f"error inside the answer stream ({kind}: {str(exc)[:160]})"
    except ImportError:  # pragma: no cover
        pass
    try:
        import ollama

        if isinstance(exc, ollama.ResponseError):
            return f"Ollama HTTP {exc.status_code}: {exc.error[:160]}"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(exc, json.JSONDecodeError):
        return "malformed JSON in the reply"
    timeouts, connects = _transport_errors()
    if isinstance(exc, (TimeoutError, *timeouts)):
        return f"timed out ({kind})"
    if isinstance(exc, (ConnectionError, *connects)):
        return f"could not connect ({kind})"
    return f"{kind}: {str(exc)[:160]}"


def _transport_errors() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    timeouts: list[type[BaseException]] = []
    connects: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
        except ImportError:  # pragma: no cover - both are core requirements
            continue
        timeouts.append(module.TimeoutException)
        connects.append(module.ConnectError)
    return tuple(timeouts), tuple(connects)
