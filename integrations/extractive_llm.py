"""An answer backend that needs no language model: it quotes the best sentences, cited.

It reads the numbered sources and the question from the citation prompt,
scores each sentence of the sources by embedding similarity to the question
(with a small bonus for higher-ranked sources), and returns the best few in
source order, each followed by its [n]. It is the default answerer offline and
the last resort behind every LLM chain.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.base.llms.types import (
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.llms.callbacks import llm_completion_callback
from llama_index.core.llms.custom import CustomLLM

from integrations.citation_prompt import parse_prompt
from integrations.keyword_text import keyword_text

EXTRACTIVE_NAME = "extractive"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_WHITESPACE = re.compile(r"\s+")
_MIN_WORDS = 4


def _blocks(text: str) -> list[str]:
    """Paragraphs and table rows of Markdown-ish text; headings and code fences dropped."""
    blocks: list[str] = []
    paragraph: list[str] = []
    in_fence = False

    def flush() -> None:
        if paragraph:
            blocks.append(" ".join(paragraph))
            paragraph.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            in_fence = not in_fence
            flush()
            continue
        if in_fence or not line or line.startswith("#") or set(line) <= set("|-: "):
            flush()
            continue
        if line.startswith("|"):
            flush()
            cells = [c.strip() for c in line.strip("|").split("|") if c.strip()]
            blocks.append(": ".join(cells))
            continue
        paragraph.append(line)
    flush()
    return blocks


def split_sentences(text: str) -> list[str]:
    """Sentences (and table rows) worth quoting: at least four words, not headings or code."""
    sentences = []
    for block in _blocks(text):
        for part in _SENTENCE_END.split(block):
            sentence = _WHITESPACE.sub(" ", part).strip(" -*>")
            if len(sentence.split()) >= _MIN_WORDS and sum(ch.isalpha() for ch in sentence) >= 10:
                sentences.append(sentence)
    return sentences


class ExtractiveLLM(CustomLLM):
    """Answers with the source sentences most similar to the question."""

    embed_model: BaseEmbedding | None = Field(
        default=None,
        description="Embedder comparing sentences with the question; None scores by shared keywords (no model, no API calls).",
    )
    max_sentences: int = Field(default=3, ge=1, description="Sentences quoted in an answer.")
    max_candidates: int = Field(default=60, ge=1, description="Most sentences scored per question.")
    keep_margin: float = Field(default=0.15, ge=0.0, description="Sentences scoring this far below the best one are left out.")
    rank_bonus: float = Field(default=0.03, ge=0.0, description="Score bonus per rank for sentences of better-ranked sources.")

    @classmethod
    def class_name(cls) -> str:
        return "ExtractiveLLM"

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(model_name=EXTRACTIVE_NAME, is_chat_model=False, context_window=1_000_000, num_output=1024)

    def answer(self, prompt: str) -> str:
        question, sources = parse_prompt(prompt)
        candidates: list[tuple[int, int, str]] = []  # (source number, position, sentence)
        for source in sources:
            for position, sentence in enumerate(split_sentences(source.text)):
                candidates.append((source.number, position, sentence))
        candidates = candidates[: self.max_candidates]
        if not question or not candidates:
            return "The documentation provided does not contain an answer to this question."
        scores = self._similarities(question, [c[2] for c in candidates]) - self.rank_bonus * np.asarray([c[0] - 1 for c in candidates])
        top = float(scores.max())
        floor = top - self.keep_margin if self.embed_model is not None else top * 0.5
        chosen = [i for i in np.argsort(-scores)[: self.max_sentences] if scores[i] >= floor and scores[i] > 0]
        best = sorted(chosen or [int(np.argmax(scores))], key=lambda i: (candidates[i][0], candidates[i][1]))
        return " ".join(f"{candidates[i][2]} [{candidates[i][0]}]" for i in best)

    def _similarities(self, question: str, sentences: list[str]) -> np.ndarray:
        if self.embed_model is not None:
            vectors = np.asarray(self.embed_model.get_text_embedding_batch(sentences))
            return vectors @ np.asarray(self.embed_model.get_query_embedding(question))
        # Keyword overlap weighted by rarity among the candidates, normalised like a cosine.
        bags = [set(keyword_text(s).split()) for s in sentences]
        query = set(keyword_text(question).split())
        df = {term: sum(term in bag for bag in bags) for term in query}
        weight = {term: math.log(1 + len(bags) / df[term]) for term in query if df[term]}
        norm = math.sqrt(sum(w * w for w in weight.values())) or 1.0
        return np.asarray([sum(weight.get(t, 0.0) for t in bag & query) / (norm * math.sqrt(len(bag) or 1)) for bag in bags])

    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        return CompletionResponse(text=self.answer(prompt), additional_kwargs={"answered_by": EXTRACTIVE_NAME})

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        text = self.answer(prompt)

        def gen() -> CompletionResponseGen:
            so_far = ""
            for word in re.findall(r"\S+\s*", text):
                so_far += word
                yield CompletionResponse(text=so_far, delta=word, additional_kwargs={"answered_by": EXTRACTIVE_NAME})

        return gen()
