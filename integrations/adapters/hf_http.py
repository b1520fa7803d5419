"""Shared HTTP plumbing for the Hugging Face components: URLs, headers, retries (docs/deployment.md), raw JSON POSTs."""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import SecretStr

from integrations.backend_errors import BackendUnavailableError, RetryExhaustedError
from integrations.deadline import remaining

logger = logging.getLogger(__name__)

DEFAULT_HF_BASE_URL = "https://router.huggingface.co"
DEFAULT_RETRY_AFTER_S = 1.0
# text-embeddings-inference's default max_client_batch_size: more inputs in one request get HTTP 413.
MAX_CLIENT_BATCH = 32

T = TypeVar("T")


def chat_url(base_url: str) -> str:
    return f"{base_url.rstrip('/')}/v1/chat/completions"


def feature_extraction_url(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}/hf-inference/models/{model}/pipeline/feature-extraction"


def model_url(base_url: str, model: str) -> str:
    return f"{base_url.rstrip('/')}/hf-inference/models/{model}"


def secret_value(token: SecretStr | str | None) -> str | None:
    if token is None:
        return None
    value = token.get_secret_value() if isinstance(token, SecretStr) else token
    return value or None


def hf_headers(token: SecretStr | None) -> dict[str, str]:
    """Headers of a raw request: user agent, JSON, and ``authorization`` only when a token is given."""
    from huggingface_hub.utils import build_hf_headers

    value = secret_value(token)
    # token=False: never fall back to a token saved on this machine.
    headers = build_hf_headers(token=value if value else False)
    headers["content-type"] = "application/json"
    return headers


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _rate_limit_reset(headers: Any) -> float | None:
    """Seconds until the IETF ``RateLimit`` window resets when no request is left in it (huggingface_hub's parser)."""
    from huggingface_hub.utils import parse_ratelimit_headers

    info = parse_ratelimit_headers(headers)
    return float(info.reset_in_seconds) if info is not None and info.remaining == 0 else None


def retry_plan(response: Any) -> tuple[float | None, str]:
    """How long to wait before retrying a failed response (None: do not retry) and a short reason."""
    status = response.status_code
    if status == 429:
        wait = _retry_after_seconds(response.headers.get("retry-after"))
        if wait is not None:
            return wait, f"HTTP 429 rate limited (Retry-After {wait:g} s)"
        wait = _rate_limit_reset(response.headers)
        if wait is not None:
            return wait, f"HTTP 429 rate limited (RateLimit reset in {wait:g} s)"
        return DEFAULT_RETRY_AFTER_S, f"HTTP 429 rate limited (no reset given; waiting {DEFAULT_RETRY_AFTER_S:g} s)"
    if status == 503:
        try:
            body = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if isinstance(body, dict) and isinstance(estimated := body.get("estimated_time"), int | float):
            return float(estimated), f"HTTP 503 model loading (estimated {estimated:g} s)"
        wait = _retry_after_seconds(response.headers.get("retry-after"))
        if wait is not None:
            return wait, f"HTTP 503 unavailable (Retry-After {wait:g} s)"
        return None, "HTTP 503 unavailable"
    return None, f"HTTP {status}"


def with_retries(
    call: Callable[[float], T], *, what: str, deadline: float, timeout_s: float, max_retries: int, max_wait_s: float | None = None
) -> T:
    """Run ``call(timeout)``; on 429/503 wait as the server asks and retry while that fits before ``deadline``,
    ``max_wait_s`` and ``max_retries``, else raise :class:`RetryExhaustedError`."""
    from huggingface_hub.errors import HfHubHTTPError

    attempt = 0
    while True:
        left = remaining(deadline)
        if left <= 0:
            raise RetryExhaustedError(f"{what}: no time left before the deadline")
        try:
            return call(min(timeout_s, left))
        except HfHubHTTPError as exc:
            if exc.response is None:
                raise
            wait, reason = retry_plan(exc.response)
            if wait is None:
                raise
            left = remaining(deadline)
            status = exc.response.status_code
            if wait >= left:
                raise RetryExhaustedError(f"{reason} > {max(left, 0):.1f} s left before the deadline", status=status, wait_s=wait) from exc
            if max_wait_s is not None and wait > max_wait_s:
                raise RetryExhaustedError(f"{reason} > {max_wait_s:g} s longest wait", status=status, wait_s=wait) from exc
            if attempt >= max_retries:
                raise RetryExhaustedError(f"{reason}, still failing after {attempt + 1} attempts", status=status, wait_s=wait) from exc
            attempt += 1
            logger.info("%s: %s; retrying in %.1f s (attempt %d)", what, reason, wait, attempt + 1)
            time.sleep(wait)


def post_json(url: str, body: dict[str, Any], *, headers: dict[str, str], timeout: float) -> Any:
    """One POST on huggingface_hub's shared keep-alive session; the parsed JSON reply (BackendUnavailableError if none)."""
    import httpx2
    from huggingface_hub.errors import InferenceTimeoutError
    from huggingface_hub.utils import get_session, hf_raise_for_status

    try:
        response = get_session().post(url, json=body, headers=headers, timeout=timeout)
    except httpx2.TimeoutException as exc:
        raise InferenceTimeoutError(f"no reply from {url} within {timeout:.1f} s") from exc
    hf_raise_for_status(response)
    try:
        return response.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BackendUnavailableError(f"malformed JSON in the reply from {url}") from exc
