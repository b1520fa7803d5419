"""Metering of any chat backend: one wrapper LLM that reserves each call's worst case, then records what it used.

Past the degrade threshold every model but the cheapest steps aside; tokens come from the reply's ``usage``, else are
estimated with LlamaIndex's tokenizer (docs/deployment.md). The wrapped LLM knows nothing of the meter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseGen, LLMMetadata
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms import LLM

from integrations.adapters.chat_completion import ChatCompletionMixin, close_streams
from integrations.usage_meter import BudgetDegraded, Metering, UsageMeter, estimate_tokens, metered

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def reported_usage(response: ChatResponse) -> dict[str, int]:
    """The token counts a backend put in the reply's ``additional_kwargs`` (none when the API sent no usage)."""
    extra = response.additional_kwargs
    return {key: extra[key] for key in USAGE_KEYS if isinstance(extra.get(key), int)}


class MeteredLLM(ChatCompletionMixin, LLM):
    """A chat LLM whose every call is reserved against the monthly cap and recorded in the usage meter."""

    llm: LLM = Field(description="The paid backend whose calls are metered (its model name prices them).")
    provider: str = Field(default="auto", description="Provider recorded with each call (e.g. the router's ':fastest').")
    cheapest_model: str | None = Field(
        default=None, description="Model kept when spend passes the budget's degrade threshold; the others step aside."
    )

    _meter: UsageMeter = PrivateAttr()

    def __init__(self, llm: LLM, meter: UsageMeter, **kwargs: Any) -> None:
        super().__init__(llm=llm, **kwargs)
        self._meter = meter

    @classmethod
    def class_name(cls) -> str:
        return "MeteredLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return self.llm.metadata

    @property
    def backend_label(self) -> str:
        from integrations.fallback_llm import backend_label

        return backend_label(self.llm)

    @property
    def model_name(self) -> str:
        return str(self.llm.metadata.model_name)

    def _call(self, messages: Sequence[ChatMessage]):
        """Budget checks before a call, then the metering block of the call, and the prompt's estimated tokens."""
        meter, model = self._meter, self.model_name
        if self.cheapest_model not in (None, model) and meter.state() == "degraded":
            share = f"{meter.budget.degrade_fraction:.0%}"
            raise BudgetDegraded(f"this month's API spend passed {share} of the cap: only {self.cheapest_model} is used")
        prompt_tokens = sum(estimate_tokens(str(m.content or "")) for m in messages)
        block = metered(
            meter, "chat", model, self.provider,
            max_tokens_in=int(prompt_tokens * 1.25) + 32, max_tokens_out=self.llm.metadata.num_output,
        )  # fmt: skip
        return block, prompt_tokens

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        block, prompt_tokens = self._call(messages)
        with block as usage:
            response = self.llm.chat(messages, **kwargs)
            _fill(usage, reported_usage(response), prompt_tokens, response.message.content or "")
        return response

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            block, prompt_tokens = self._call(messages)
            with block as usage:
                stream = self.llm.stream_chat(messages, **kwargs)
                text, reported = "", {}
                try:
                    for chunk in stream:
                        text = chunk.message.content or text
                        reported = reported_usage(chunk) or reported
                        yield chunk
                finally:
                    close_streams([stream])
                    _fill(usage, reported, prompt_tokens, text)

        return gen()


def _fill(usage: Metering, reported: dict[str, int], prompt_tokens: int, text: str) -> None:
    """Token counts from the API's ``usage``; estimated with the bundled tokenizer when it sent none."""
    if "prompt_tokens" in reported and "completion_tokens" in reported:
        usage.tokens_in, usage.tokens_out = reported["prompt_tokens"], reported["completion_tokens"]
    else:
        usage.tokens_in, usage.tokens_out, usage.estimated = prompt_tokens, estimate_tokens(text), True
