"""An Ollama chat model that says when an answer was cut, and keeps its model loaded between questions.

The stock class (llama-index-llms-ollama 0.11) ignores ``done_reason``; ``keep_alive`` is sent with every request and
the socket timeout allows for a cold load (``load_allowance_s``) within the question's deadline."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseGen
from llama_index.core.bridge.pydantic import Field
from llama_index.llms.ollama import Ollama

from integrations.adapters.chat_completion import finish_marks


class OllamaLLM(Ollama):
    """Ollama ``/api/chat`` with truncation marked, ``keep_alive`` sent and a model-load allowance on the first reply."""

    load_allowance_s: float = Field(
        default=60.0, ge=0, description="Seconds added to the reply timeout for a model Ollama must load first."
    )

    def __init__(self, *, request_timeout: float, load_allowance_s: float = 60.0, **kwargs: Any) -> None:
        super().__init__(request_timeout=request_timeout + load_allowance_s, load_allowance_s=load_allowance_s, **kwargs)

    @classmethod
    def class_name(cls) -> str:
        return "OllamaLLM"

    @property
    def backend_label(self) -> str:
        return f"ollama:{self.model}"

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        response = super().chat(messages, **kwargs)
        marks = finish_marks(self.backend_label, (response.raw or {}).get("done_reason"))
        response.additional_kwargs = {**response.additional_kwargs, "answered_by": self.backend_label, **marks}
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        stream = super().stream_chat(messages, **kwargs)

        def gen() -> ChatResponseGen:
            for chunk in stream:
                marks = finish_marks(self.backend_label, (chunk.raw or {}).get("done_reason"))
                chunk.additional_kwargs = {**chunk.additional_kwargs, "answered_by": self.backend_label, **marks}
                yield chunk

        return gen()
