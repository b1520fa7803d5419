"""Cross-encoder reranking offline, with an ONNX model from a directory the user provides (docs/configuration.md).

The directory holds ``tokenizer.json`` and ``model.onnx`` (or ``onnx/model.onnx``); the model returns one logit per
pair (its sigmoid is the score) or one per label (the softmax of ``positive_label``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.bridge.pydantic import Field, PrivateAttr

from integrations.adapters.local_embedding import load_onnx
from integrations.cross_encoder_rerank import CrossEncoderRerank, sigmoid

logger = logging.getLogger(__name__)

MODEL_FILES = ("model.onnx", "onnx/model.onnx")
TOKENIZER_FILE = "tokenizer.json"


def model_files(model_dir: Path) -> tuple[Path, Path]:
    """(model, tokenizer) paths in a cross-encoder directory; ValueError naming what is missing and how to get it."""
    model = next((model_dir / name for name in MODEL_FILES if (model_dir / name).is_file()), None)
    tokenizer = model_dir / TOKENIZER_FILE
    missing = [name for name, found in ((" or ".join(MODEL_FILES), model), (TOKENIZER_FILE, tokenizer.is_file())) if not found]
    if missing:
        raise ValueError(
            f"rerank.model_dir={str(model_dir)!r} has no {' and no '.join(missing)}: put a cross-encoder's ONNX export and its "
            "tokenizer there (e.g. onnx/model.onnx and tokenizer.json of cross-encoder/ms-marco-MiniLM-L6-v2)"
        )
    return model, tokenizer  # type: ignore[return-value]


class LocalCrossEncoderRerank(CrossEncoderRerank):
    """Rerank retrieved nodes with a cross-encoder ONNX model read from ``model_dir``."""

    model_dir: Path = Field(description="Directory with tokenizer.json and model.onnx (or onnx/model.onnx).")
    max_tokens: int = Field(default=512, ge=16, description="Tokens per (question, passage) pair; longer pairs are truncated.")
    batch_size: int = Field(default=16, ge=1, description="Pairs per ONNX run.")
    threads: int = Field(default=2, ge=1, description="onnxruntime intra-op threads.")
    positive_label: int = Field(default=1, ge=0, description="Label index scored when the model returns several labels per pair.")

    _session: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        model_files(self.model_dir)  # fail at start-up, not at the first question

    @classmethod
    def class_name(cls) -> str:
        return "LocalCrossEncoderRerank"

    def load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            model_path, tokenizer_path = model_files(self.model_dir)
            self._session, self._tokenizer = load_onnx(str(model_path), str(tokenizer_path), self.threads, self.max_tokens)
            logger.info("loaded cross-encoder %s", model_path)

    def _failures(self) -> tuple[type[BaseException], ...]:
        return (Exception,)  # onnxruntime's errors derive from Exception only; any of them keeps the fused order

    def _score(self, query: str, texts: list[str]) -> list[float]:
        self.load()
        wanted = {i.name for i in self._session.get_inputs()}
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            encodings = self._tokenizer.encode_batch([(query, text) for text in texts[start : start + self.batch_size]])
            feed = {
                "input_ids": np.asarray([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.asarray([e.type_ids for e in encodings], dtype=np.int64),
            }
            logits = np.asarray(self._session.run(None, {k: v for k, v in feed.items() if k in wanted})[0], dtype=np.float64)
            if logits.ndim == 1:
                logits = logits[:, None]
            if logits.shape[1] == 1:
                scores.extend(sigmoid(float(x)) for x in logits[:, 0])
            else:
                exp = np.exp(logits - logits.max(axis=1, keepdims=True))
                scores.extend(float(s) for s in exp[:, self.positive_label] / exp.sum(axis=1))
        return scores
