"""Cross-encoder reranking through the Hugging Face router (text-ranking models; contract in docs/deployment.md)."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from pydantic import SecretStr

from integrations.adapters.hf_http import (
    DEFAULT_HF_BASE_URL,
    MAX_CLIENT_BATCH,
    hf_headers,
    model_url,
    post_json,
    secret_value,
    with_retries,
)
from integrations.backend_errors import BackendUnavailableError
from integrations.cross_encoder_rerank import CrossEncoderRerank, sigmoid
from integrations.deadline import current_deadline
from integrations.redaction import redacted_errors
from integrations.usage_meter import UsageMeter, estimate_tokens, metered


class HFCrossEncoderRerank(CrossEncoderRerank):
    """Rerank retrieved nodes with a cross-encoder served by the HF router (text-embeddings-inference rerank contract)."""

    base_url: str = Field(
        default=DEFAULT_HF_BASE_URL, description="Router base URL; requests go to {base_url}/hf-inference/models/{model}."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Time budget of the scoring requests of one question.")

    _token: SecretStr | None = PrivateAttr(default=None)
    _meter: UsageMeter | None = PrivateAttr(default=None)

    def __init__(self, *, token: SecretStr | str | None = None, meter: UsageMeter | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        value = secret_value(token)
        self._token = SecretStr(value) if value else None
        self._meter = meter

    @classmethod
    def class_name(cls) -> str:
        return "HFCrossEncoderRerank"

    def _limit(self) -> int:
        if self._meter is not None and self._meter.state() == "degraded":  # spend near the cap: score fewer pairs
            return max(self.top_n, self.max_candidates // 2)
        return self.max_candidates

    def _failures(self) -> tuple[type[BaseException], ...]:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled

        return (
            HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled, httpx2.HTTPError, BackendUnavailableError,
            ConnectionError, TimeoutError,
        )  # fmt: skip

    def _describe(self, exc: BaseException) -> str:
        from integrations.backend_errors import describe_failure

        return describe_failure(exc)

    def _scores_by_index(self, out: Any, count: int) -> list[float]:
        """One score per text from ``[{"index", "score"}, ...]`` in any order; raises when that is not what came back."""
        scores: list[float | None] = [None] * count
        if isinstance(out, list):
            for item in out:
                if not isinstance(item, dict):
                    break
                index, score = item.get("index"), item.get("score")
                if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < count:
                    break
                if not isinstance(score, int | float) or isinstance(score, bool) or not math.isfinite(score):
                    break
                scores[index] = float(score)
        if any(s is None for s in scores):
            raise BackendUnavailableError(
                f"{self.model} returned a reply that is not one {{index, score}} per passage: {json.dumps(out)[:120]}"
            )
        return [float(s) for s in scores if s is not None]

    def _score(self, query: str, texts: list[str]) -> list[float]:
        token = self._token.get_secret_value() if self._token else None
        headers = hf_headers(self._token)
        url = model_url(self.base_url, self.model)
        deadline = min(current_deadline(self.timeout_s), time.monotonic() + self.timeout_s)
        scores: list[float] = []
        with redacted_errors(token), metered(self._meter, "rerank", self.model, "hf-inference", calls=1) as usage:
            for start in range(0, len(texts), MAX_CLIENT_BATCH):
                part = texts[start : start + MAX_CLIENT_BATCH]
                body = {"query": query, "texts": part, "truncate": True, "raw_scores": False}
                out = with_retries(
                    lambda timeout, body=body: post_json(url, body, headers=headers, timeout=timeout),
                    what=f"rerank {self.model}",
                    deadline=deadline,
                    timeout_s=self.timeout_s,
                    max_retries=0,
                )
                scores += self._scores_by_index(out, len(part))
            if self._meter is not None:
                usage.tokens_in, usage.estimated = sum(estimate_tokens(query) + estimate_tokens(t) for t in texts), True
        if any(s < 0.0 or s > 1.0 for s in scores):  # raw logits from a server that ignored raw_scores=false
            scores = [sigmoid(s) for s in scores]
        return scores
