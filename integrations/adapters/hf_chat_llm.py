"""Chat completions through the Hugging Face router: a plain LlamaIndex ``LLM`` (docs/design-notes.md says why)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from typing import Any, ClassVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseGen, LLMMetadata, MessageRole
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.constants import DEFAULT_CONTEXT_WINDOW, DEFAULT_NUM_OUTPUTS
from llama_index.core.llms import LLM
from llama_index.core.llms.callbacks import llm_chat_callback
from pydantic import SecretStr

from integrations.adapters.chat_completion import ChatCompletionMixin, finish_marks
from integrations.adapters.hf_http import DEFAULT_HF_BASE_URL, chat_url, secret_value, with_retries
from integrations.backend_errors import BackendUnavailableError
from integrations.deadline import current_deadline
from integrations.redaction import redacted_errors

logger = logging.getLogger(__name__)


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with the system text moved to the start of the first user turn (for templates without a system role)."""
    system = "\n\n".join(str(m.get("content") or "") for m in messages if m.get("role") == "system")
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    for message in rest:
        if message.get("role") == "user":
            message["content"] = f"{system}\n\n{message.get('content') or ''}"
            return rest
    return [{"role": "user", "content": system}, *rest]


def _usage(raw: Any) -> dict[str, int]:
    usage = raw.get("usage") if isinstance(raw, dict) else None
    if not isinstance(usage, dict):
        return {}
    return {key: int(usage[key]) for key in ("prompt_tokens", "completion_tokens", "total_tokens") if isinstance(usage.get(key), int)}


class HFChatLLM(ChatCompletionMixin, LLM):
    """One chat model of the Hugging Face Inference Providers router (OpenAI-compatible route)."""

    model_name: str = Field(description="Model id sent in the body, optionally with :fastest, :cheapest or :<provider>.")
    timeout: float = Field(default=30.0, gt=0, description="Seconds to wait for one HTTP reply (capped by the time left).")
    temperature: float = Field(default=0.1, gt=0.0, description="Sampling temperature.")
    num_output: int = Field(default=DEFAULT_NUM_OUTPUTS, description="Most tokens of one answer (max_tokens).")
    context_window: int = Field(default=DEFAULT_CONTEXT_WINDOW, description="Tokens of prompt and answer the model accepts.")
    base_url: str = Field(default=DEFAULT_HF_BASE_URL, description="Router base URL; requests go to {base_url}/v1/chat/completions.")
    max_retries: int = Field(
        default=2, ge=0, description="Retries after a 429 or 503-loading reply, each only if its wait fits the deadline."
    )
    max_wait_s: float = Field(
        default=10.0,
        ge=0,
        description="Longest single wait honoured; a longer Retry-After or loading estimate moves on to the next model at once.",
    )
    deadline_s: float = Field(
        default=60.0, gt=0, description="Time budget of one call (retries included) when no question deadline is active."
    )

    _token: SecretStr = PrivateAttr()
    # Models whose chat template rejected a system message, shared by every instance of this process.
    _no_system_role: ClassVar[set[str]] = set()
    _no_system_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self, *, model_name: str, token: SecretStr | str | None, base_url: str = DEFAULT_HF_BASE_URL, timeout: float = 30.0, **kwargs: Any
    ) -> None:
        value = secret_value(token)
        if not value:
            raise ValueError(
                f"HFChatLLM({model_name}) needs a Hugging Face token: set HF_TOKEN (or HUGGINGFACE_API_TOKEN). "
                "A token saved on this machine is deliberately not used."
            )
        if timeout is None or timeout <= 0:
            raise ValueError("HFChatLLM needs a positive timeout in seconds (the stock default None waits forever)")
        super().__init__(model_name=model_name, base_url=base_url, timeout=timeout, **kwargs)
        self._token = SecretStr(value)

    @classmethod
    def class_name(cls) -> str:
        return "HFChatLLM"

    @property
    def backend_label(self) -> str:
        return f"hf_api:{self.model_name}"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(context_window=self.context_window, num_output=self.num_output, is_chat_model=True, model_name=self.model_name)

    @property
    def url(self) -> str:
        return chat_url(self.base_url)

    def _client(self, timeout: float) -> Any:
        from huggingface_hub import InferenceClient

        # A client is a few attributes over the shared keep-alive session: one per call lets each
        # call carry the timeout left before the deadline without touching shared state.
        # The full URL as model: provider forced to hf-inference, URL used verbatim.
        return InferenceClient(model=self.url, provider="hf-inference", token=self._token.get_secret_value(), timeout=timeout)

    def _open(self, messages: Sequence[ChatMessage], stream: bool, **kwargs: Any) -> tuple[Any, Any]:
        from huggingface_hub.errors import HfHubHTTPError

        hf_messages = [{"role": m.role.value, "content": m.content or ""} for m in messages]
        has_system = any(m.get("role") == "system" for m in hf_messages)
        if has_system and self.model_name in self._no_system_role:
            hf_messages, has_system = fold_system(hf_messages), False
        try:
            return self._send(hf_messages, stream, **kwargs)
        except HfHubHTTPError as exc:
            if not has_system or exc.response is None or exc.response.status_code not in (400, 422):
                raise
            # A 400 or 422 to a request with a system message: try once more without one (Gemma-style templates).
            output = self._send(fold_system(hf_messages), stream, **kwargs)
        with self._no_system_lock:
            self._no_system_role.add(self.model_name)
        logger.info("%s rejects a system message: the system text now goes into the first user turn", self.backend_label)
        return output

    def _send(self, hf_messages: list[dict[str, Any]], stream: bool, **kwargs: Any) -> tuple[Any, Any]:
        # The real model id in the body (the stock class sends "dummy" for URL models).
        model_kwargs = {"model": self.model_name, "max_tokens": self.num_output, "temperature": self.temperature, **kwargs}
        if stream:
            # The one field InferenceClient.chat_completion does not send by default (tests/test_hf_client_parity.py):
            # OpenAI-compatible servers put `usage` in a stream only when asked, and the meter needs it.
            model_kwargs["stream_options"] = {"include_usage": True}
        deadline = current_deadline(self.deadline_s)
        clients: list[Any] = []

        def attempt(timeout: float) -> Any:
            client = self._client(timeout)
            clients.append(client)
            return client.chat_completion(messages=hf_messages, stream=stream, **model_kwargs)

        try:
            output = with_retries(
                attempt,
                what=self.backend_label,
                deadline=deadline,
                timeout_s=self.timeout,
                max_retries=self.max_retries,
                max_wait_s=self.max_wait_s,
            )
        except json.JSONDecodeError as exc:
            _close(clients)
            raise BackendUnavailableError(f"malformed JSON in the reply from {self.url}") from exc
        except BaseException:
            _close(clients)
            raise
        _close(clients[:-1])  # failed attempts; the last one may still be streaming
        return output, clients[-1]

    @property
    def provider_name(self) -> str:
        """The provider asked for with a model suffix (``:fastest``, ``:together``…), else the router's choice."""
        return self.model_name.split(":", 1)[1] if ":" in self.model_name else "auto"

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with redacted_errors(self._token.get_secret_value()):
            output, client = self._open(messages, stream=False, **kwargs)
            client.close()
            if not output.choices:
                raise BackendUnavailableError(f"{self.backend_label}: the reply has no choices")
            text = output.choices[0].message.content or ""
            reported = _usage(output)
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
            raw=dict(output),
            additional_kwargs={
                "answered_by": self.backend_label,
                **reported,
                **finish_marks(self.backend_label, output.choices[0].finish_reason),
            },
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            with redacted_errors(self._token.get_secret_value()):
                chunks, client = self._open(messages, stream=True, **kwargs)
                text = ""
                try:
                    for chunk in chunks:
                        delta, finished = "", {}
                        if chunk.choices:  # usage-only chunks have choices: []
                            delta = chunk.choices[0].delta.content or ""
                            finished = finish_marks(self.backend_label, chunk.choices[0].finish_reason)
                        text += delta
                        yield ChatResponse(
                            message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                            delta=delta,
                            raw=dict(chunk),
                            additional_kwargs={"answered_by": self.backend_label, **_usage(chunk), **finished},
                        )
                except json.JSONDecodeError as exc:
                    raise BackendUnavailableError(f"malformed JSON in the answer stream from {self.url}") from exc
                finally:
                    client.close()  # releases the streamed HTTP response

        return gen()


def _close(clients: list[Any]) -> None:
    for client in clients:
        client.close()
