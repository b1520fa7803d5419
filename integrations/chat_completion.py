"""Completion and async entry points for LLMs whose real work is a synchronous ``chat``/``stream_chat``.

Prompts become one user message; async calls run the sync paths in worker threads
(the stock HF async paths lose chunks and break across event loops, GUIDE §3).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    MessageRole,
)

from integrations.backend_errors import aiter_in_thread


class ChatCompletionMixin:
    """Put first among an LLM's bases; the class provides ``chat`` and ``stream_chat``."""

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        response = self.chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
        return CompletionResponse(text=response.message.content or "", raw=response.raw, additional_kwargs=response.additional_kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        stream = self.stream_chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)

        def gen() -> CompletionResponseGen:
            for chunk in stream:
                yield CompletionResponse(
                    text=chunk.message.content or "", delta=chunk.delta, raw=chunk.raw, additional_kwargs=chunk.additional_kwargs
                )

        return gen()

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self.complete, prompt, formatted, **kwargs)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return aiter_in_thread(self.stream_chat(messages, **kwargs))

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return aiter_in_thread(self.stream_complete(prompt, formatted, **kwargs))
