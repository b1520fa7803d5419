"""Tokens never leave in an error: secrets and anything shaped like a token are scrubbed from exceptions and text."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

# Anything shaped like a Hugging Face token or an Authorization value, even one we did not send.
_SECRET_SHAPES = re.compile(r"hf_[A-Za-z0-9]{30,}|(?i:bearer)\s+[^\s\"',;]+")
REDACTED = "[redacted]"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` without the given secrets and without anything shaped like a token or ``Bearer …``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_SHAPES.sub(REDACTED, text)


@contextlib.contextmanager
def redacted_errors(*secrets: str | None) -> Iterator[None]:
    """Scrub secrets from every exception leaving the block (and the exceptions it chains), then re-raise it: the one
    choke point for reply text (which may echo the ``Authorization`` header) on its way to notices, logs and tracebacks."""
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
