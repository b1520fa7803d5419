"""An ordered chain of answer backends: the first that answers wins, the others say why they were skipped.

Responses carry ``additional_kwargs["answered_by"]`` and ``["fallbacks"]``; docs/design-notes.md has the rules."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseGen, LLMMetadata
from llama_index.core.bridge.pydantic import Field, field_validator
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.llms import LLM

from integrations.adapters.chat_completion import ChatCompletionMixin, close_streams
from integrations.backend_errors import (
    AllBackendsFailedError,
    BackendUnavailableError,
    StreamInterruptedError,
    describe_failure,
    transient_errors,
)
from integrations.deadline import question_deadline

logger = logging.getLogger(__name__)
dispatcher = get_dispatcher(__name__)
T = TypeVar("T")


def within(deadline: float, call: Callable[[], T], on_late: Callable[[T], None] | None = None) -> T:
    """``call()`` in a worker thread with the caller's context, abandoned at ``deadline``; a late result goes to ``on_late``."""
    box: dict[str, Any] = {}
    lock = threading.Lock()
    context = contextvars.copy_context()

    def work() -> None:
        try:
            result = context.run(call)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which re-raises it
            with lock:
                box["error"] = exc
            return
        with lock:
            box["result"] = result
            late = box.get("abandoned", False)
        if late and on_late is not None:
            on_late(result)

    worker = threading.Thread(target=work, name="docsrag-backend-call", daemon=True)
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    with lock:
        if "error" in box:
            raise box["error"]
        if "result" in box:
            return box["result"]
        box["abandoned"] = True
    raise BackendUnavailableError("no answer before the question's deadline (a reply still arriving was abandoned)")


class BackendSkippedEvent(BaseEvent):
    """A chain member failed or was skipped; the next one is tried."""

    backend: str
    reason: str

    @classmethod
    def class_name(cls) -> str:
        return "BackendSkippedEvent"


class BackendAnsweredEvent(BaseEvent):
    """The chain committed to this member's answer."""

    backend: str
    skipped: list[str]

    @classmethod
    def class_name(cls) -> str:
        return "BackendAnsweredEvent"


def backend_label(llm: LLM) -> str:
    """``hf_api:<model>``, ``ollama:<model>``, ``local:<file>``, ``extractive``, or the model name."""
    label = getattr(llm, "backend_label", None)
    if isinstance(label, str) and label:
        return label
    from llama_index.llms.ollama import Ollama

    if isinstance(llm, Ollama):  # before .metadata, which may call /api/show
        return f"ollama:{llm.model}"
    return str(llm.metadata.model_name or llm.class_name())


class FallbackLLM(ChatCompletionMixin, LLM):
    """Try ``members`` in order until one answers; record who answered and why the others did not."""

    members: list[LLM] = Field(description="Backends in order of preference; the last one is always tried.")
    deadline_s: float = Field(default=60.0, gt=0, description="Time budget of one question across members, retries and waits.")
    context_window: int = Field(default=4096, ge=512, description="Context window reported to LlamaIndex (the smallest of the members').")
    num_output: int = Field(default=512, ge=1, description="Answer tokens reported to LlamaIndex.")

    @field_validator("members")
    @classmethod
    def _not_empty(cls, members: list[LLM]) -> list[LLM]:
        if not members:
            raise ValueError("FallbackLLM needs at least one member")
        return members

    @classmethod
    def class_name(cls) -> str:
        return "FallbackLLM"

    @property
    def labels(self) -> list[str]:
        return [backend_label(m) for m in self.members]

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window,
            num_output=self.num_output,
            is_chat_model=True,
            model_name="fallback(" + ", ".join(self.labels) + ")",
        )

    def _skip(self, label: str, reason: str, fallbacks: list[str]) -> None:
        fallbacks.append(f"{label}: {reason}")
        logger.info("answer backend %s skipped: %s", label, reason)  # also in the response metadata
        dispatcher.event(BackendSkippedEvent(backend=label, reason=reason))

    def _annotate(self, response: ChatResponse, label: str, fallbacks: list[str]) -> ChatResponse:
        response.additional_kwargs = {**response.additional_kwargs, "answered_by": label, "fallbacks": list(fallbacks)}
        return response

    def _tried(self, deadline: float, fallbacks: list[str]) -> Iterator[tuple[bool, LLM, str]]:
        """(is the last member, member, label) for each member to try; those left when the deadline passed are skipped."""
        for index, member in enumerate(self.members):
            label, last = backend_label(member), index == len(self.members) - 1
            if not last and time.monotonic() >= deadline:
                self._skip(label, f"not tried: the {self.deadline_s:g} s deadline for this question had passed", fallbacks)
                continue
            yield last, member, label

    def _failed(self, label: str, exc: BaseException, fallbacks: list[str], last: bool) -> None:
        self._skip(label, describe_failure(exc), fallbacks)
        if last:
            raise AllBackendsFailedError("No answer backend could answer: " + "; ".join(fallbacks), fallbacks) from exc

    @dispatcher.span
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        deadline = time.monotonic() + self.deadline_s
        fallbacks: list[str] = []
        for last, member, label in self._tried(deadline, fallbacks):
            try:
                with question_deadline(deadline):
                    if last:
                        response = member.chat(messages, **kwargs)
                    else:
                        response = within(deadline, lambda member=member: member.chat(messages, **kwargs))
                if not (response.message.content or "").strip():
                    raise BackendUnavailableError("the reply had no answer text")
            except transient_errors() as exc:
                self._failed(label, exc, fallbacks, last)
                continue
            dispatcher.event(BackendAnsweredEvent(backend=label, skipped=list(fallbacks)))
            return self._annotate(response, label, fallbacks)
        raise AssertionError("unreachable: the last member either answers or raises")

    @dispatcher.span
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        errors = transient_errors()

        def gen() -> ChatResponseGen:
            deadline = time.monotonic() + self.deadline_s
            fallbacks: list[str] = []
            for last, member, label in self._tried(deadline, fallbacks):
                opened: list[Any] = []

                def first_token(member: LLM = member, opened: list[Any] = opened) -> list[ChatResponse]:
                    stream = iter(member.stream_chat(messages, **kwargs))
                    opened.append(stream)
                    pending: list[ChatResponse] = []
                    for chunk in stream:  # pull up to the first real token before committing
                        pending.append(chunk)
                        if chunk.delta:
                            return pending
                    raise BackendUnavailableError("the stream ended without any answer text")

                try:
                    with question_deadline(deadline):
                        if last:
                            pending = first_token()
                        else:
                            pending = within(deadline, first_token, on_late=lambda _pending, opened=opened: close_streams(opened))
                    stream = opened[0]
                except errors as exc:
                    close_streams(opened)
                    self._failed(label, exc, fallbacks, last)
                    continue
                dispatcher.event(BackendAnsweredEvent(backend=label, skipped=list(fallbacks)))
                delivered = 0
                for chunk in pending:
                    delivered += len(chunk.delta or "")
                    yield self._annotate(chunk, label, fallbacks)
                try:
                    for chunk in stream:
                        delivered += len(chunk.delta or "")
                        yield self._annotate(chunk, label, fallbacks)
                except errors as exc:
                    raise StreamInterruptedError(
                        f"{label} failed after {delivered} characters of the answer had been streamed "
                        f"({describe_failure(exc)}); the answer is incomplete. Ask again."
                    ) from exc
                return

        return gen()
