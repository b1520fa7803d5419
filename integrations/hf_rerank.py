"""Cross-encoder reranking through the Hugging Face Inference API.

All (question, passage) pairs of a question go in ONE raw POST of
``{"inputs": [{"text": q, "text_pair": d}, ...]}`` to ``{base_url}/hf-inference/models/{id}``
(``InferenceClient.text_classification`` keeps only the first result of a batch).
Scores are normalised to 0..1 (sigmoid of logits). The candidate cap, score
cache and failure handling are integrations.cross_encoder_rerank's; near the
spending cap fewer pairs are scored.
"""

from __future__ import annotations

import json
from typing import Any

from llama_index.core.bridge.pydantic import Field, PrivateAttr
from pydantic import SecretStr

from integrations.backend_errors import BackendUnavailableError
from integrations.cross_encoder_rerank import CrossEncoderRerank, sigmoid
from integrations.hf_http import DEFAULT_HF_BASE_URL, hf_headers, model_url, post_json, secret_value
from integrations.usage_meter import UsageMeter, estimate_tokens, metered


class HFCrossEncoderRerank(CrossEncoderRerank):
    """Rerank retrieved nodes with a cross-encoder served by the HF Inference API."""

    base_url: str = Field(
        default=DEFAULT_HF_BASE_URL, description="Router base URL; requests go to {base_url}/hf-inference/models/{model}."
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of the one scoring request per question.")
    function_to_apply: str = Field(
        default="sigmoid", description="Score function requested from the server; logits are squashed client-side too."
    )
    positive_label: str = Field(default="LABEL_1", description="Label scored when the model returns several labels per pair.")

    _token: SecretStr | None = PrivateAttr(default=None)
    _requests: int = PrivateAttr(default=0)
    _meter: UsageMeter | None = PrivateAttr(default=None)

    def __init__(self, *, token: SecretStr | str | None = None, meter: UsageMeter | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        value = secret_value(token)
        self._token = SecretStr(value) if value else None
        self._meter = meter

    @classmethod
    def class_name(cls) -> str:
        return "HFCrossEncoderRerank"

    @property
    def requests_sent(self) -> int:
        return self._requests

    def _limit(self) -> int:
        if self._meter is not None and self._meter.state() == "degraded":  # spend near the cap: score fewer pairs
            return max(self.top_n, self.max_candidates // 2)
        return self.max_candidates

    def _failures(self) -> tuple[type[BaseException], ...]:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

        return (HfHubHTTPError, InferenceTimeoutError, httpx2.HTTPError, BackendUnavailableError, ConnectionError, TimeoutError)

    def _describe(self, exc: BaseException) -> str:
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(exc, HfHubHTTPError) and exc.response is not None:
            return f"HTTP {exc.response.status_code}"
        if isinstance(exc, TimeoutError):
            return "timed out"
        return super()._describe(exc)

    def _score_of(self, item: Any) -> float:
        """One pair's score from ``{"label","score"}`` or a list of them."""
        if isinstance(item, dict):
            return float(item["score"])
        if isinstance(item, list) and item:
            if len(item) == 1:
                return float(item[0]["score"])
            by_label = {entry["label"]: float(entry["score"]) for entry in item}
            if self.positive_label in by_label:
                return by_label[self.positive_label]
        raise BackendUnavailableError(f"{self.model} returned an unexpected score item: {json.dumps(item)[:120]}")

    def _score(self, query: str, texts: list[str]) -> list[float]:
        body: dict[str, Any] = {
            "inputs": [{"text": query, "text_pair": text} for text in texts],
            "parameters": {"function_to_apply": self.function_to_apply},
        }
        with self._lock:
            self._requests += 1
        with metered(self._meter, "rerank", self.model, "hf-inference", calls=1) as usage:
            out = post_json(model_url(self.base_url, self.model), body, headers=hf_headers(self._token), timeout=self.timeout_s)
            if self._meter is not None:
                usage.tokens_in, usage.estimated = sum(estimate_tokens(query) + estimate_tokens(t) for t in texts), True
        if not isinstance(out, list) or len(out) != len(texts):
            raise BackendUnavailableError(f"{self.model} returned {type(out).__name__} for {len(texts)} pairs; expected one score per pair")
        scores = [self._score_of(item) for item in out]
        if any(s < 0.0 or s > 1.0 for s in scores):  # logits: squash all of them
            scores = [sigmoid(s) for s in scores]
        return scores
