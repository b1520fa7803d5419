"""Completion and async entry points for LLMs whose real work is a synchronous ``chat``/``stream_chat``.

Async calls run the sync paths in worker threads (the stock HF async paths lose chunks and break across event loops)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.generic_utils import chat_to_completion_decorator, stream_chat_to_completion_decorator
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
)


def finish_marks(label: str, finish_reason: Any) -> dict[str, Any]:
    """``truncated`` and a notice for a reply cut at the token limit (OpenAI ``finish_reason`` / Ollama ``done_reason``)."""
    if finish_reason != "length":
        return {}
    notice = f"The answer from {label} was cut at the answer-length limit (llm.max_tokens) and is incomplete."
    return {"truncated": True, "notices": [notice]}


async def aiter_in_thread(stream: Iterator[Any]) -> AsyncIterator[Any]:
    """Consume a blocking iterator (a sync answer stream) from async code, one item per worker-thread hop."""
    done = object()
    while True:
        item = await asyncio.to_thread(next, stream, done)
        if item is done:
            return
        yield item


def close_streams(streams: Sequence[Any]) -> None:
    """Close the replies a caller stops reading, so their backends release the HTTP response now, not when collected."""
    for stream in streams:
        if hasattr(stream, "close"):
            stream.close()


class ChatCompletionMixin:
    """Put first among an LLM's bases; the class provides ``chat`` and ``stream_chat``."""

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        return await asyncio.to_thread(self.chat, messages, **kwargs)

    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return await asyncio.to_thread(self.complete, prompt, formatted, **kwargs)

    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        return aiter_in_thread(self.stream_chat(messages, **kwargs))

    async def astream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseAsyncGen:
        return aiter_in_thread(self.stream_complete(prompt, formatted, **kwargs))
