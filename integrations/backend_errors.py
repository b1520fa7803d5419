"""Errors shared by the answer backends and the fallback chain, and how a failure is told to the user."""

from __future__ import annotations

from integrations.redaction import redact


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
