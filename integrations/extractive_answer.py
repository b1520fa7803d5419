"""Answers without a language model: the passages' own sentences that answer the question, cited.

The citation synthesizer answers this way when no LLM is configured or every
LLM of the chain failed. It reads the passages it was given (never a prompt),
scores each quotable unit by embedding similarity to the question (keyword
overlap without an embedder), with a small bonus for better-ranked passages and
for units that name something (a code span or identifier: the setting or command
a reader needs), and quotes the best few, best first, each followed by its [n].

A quotable unit is a sentence or table row of at least four words. A sentence
that introduces a code block or list (it ends with ":") is quoted together with
that block when the block is short, and never on its own. A unit whose words
nearly repeat one already seen (the same text in two passages, boilerplate) is
scored once.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field
from llama_index.core.schema import BaseComponent

from integrations.keyword_text import keyword_text

EXTRACTIVE_NAME = "extractive"
NO_ANSWER = "The documentation provided does not contain an answer to this question."
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_WHITESPACE = re.compile(r"\s+")
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+")
_WORD = re.compile(r"\w+")
#: A code span, a --flag, or an identifier (snake_case, dotted.name, camelCase, UPPER_CASE).
_NAMES_SOMETHING = re.compile(r"`[^`]+`|(?<![\w-])--?[A-Za-z][\w-]+|\b\w+_\w+|\b[A-Za-z]\w+(?:\.\w{2,})+|\b[a-z]+[A-Z]\w*")
#: Links and their targets: a URL names no setting.
_LINK = re.compile(r"\]\([^)]*\)|<?https?://\S+")
_MIN_WORDS = 4
#: A block (code or list) longer than this is too long to quote with the sentence that introduces it.
MAX_BLOCK_LINES = 12
MAX_BLOCK_CHARS = 700


@dataclass
class Unit:
    """One quotable piece of a passage: what is scored (``sentence``) and what is quoted (``text``)."""

    source: int  # 1-based passage number
    sentence: str
    text: str


@dataclass
class _Block:
    kind: str  # "paragraph", "code", "list", "row"
    lines: list[str]


def _blocks(text: str) -> list[_Block]:
    """Paragraphs, code fences, lists and table rows of Markdown-ish text; headings dropped."""
    blocks: list[_Block] = []
    current: _Block | None = None
    fence: list[str] | None = None

    def flush() -> None:
        nonlocal current
        if current is not None and current.lines:
            blocks.append(current)
        current = None

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("```", "~~~")):
            if fence is None:
                flush()
                fence = [line]
            else:
                blocks.append(_Block("code", [*fence, line]))
                fence = None
            continue
        if fence is not None:
            fence.append(raw.rstrip())
            continue
        if not line or line.startswith("#") or set(line) <= set("|-: "):
            flush()
            continue
        if line.startswith("|"):
            flush()
            cells = [c.strip() for c in line.strip("|").split("|") if c.strip()]
            blocks.append(_Block("row", [": ".join(cells)]))
            continue
        kind = "list" if _LIST_ITEM.match(line) else "paragraph"
        if current is not None and current.kind == "list" and kind == "paragraph":
            current.lines[-1] += " " + line  # a list item's continuation line
            continue
        if current is None or current.kind != kind:
            flush()
            current = _Block(kind, [])
        current.lines.append(line)
    flush()
    return blocks


def _quotable(sentence: str) -> str | None:
    sentence = _WHITESPACE.sub(" ", sentence).strip(" -*>")
    if len(sentence.split()) >= _MIN_WORDS and sum(ch.isalpha() for ch in sentence) >= 10:
        return sentence
    return None


def _short(block: _Block) -> bool:
    return len(block.lines) <= MAX_BLOCK_LINES and sum(len(line) for line in block.lines) <= MAX_BLOCK_CHARS


def units(text: str, source: int = 1) -> list[Unit]:
    """The quotable units of one passage, in passage order."""
    out: list[Unit] = []
    blocks = _blocks(text)
    for position, block in enumerate(blocks):
        if block.kind == "code":
            continue
        lines = [_LIST_ITEM.sub("", line) for line in block.lines] if block.kind == "list" else block.lines
        if block.kind == "paragraph":
            lines = [" ".join(lines)]
        parts = [sentence for line in lines for sentence in _SENTENCE_END.split(line)]
        for index, part in enumerate(parts):
            sentence = _quotable(part)
            if sentence is None:
                continue
            if not sentence.endswith(":"):
                out.append(Unit(source, sentence, sentence))
                continue
            following = blocks[position + 1] if position + 1 < len(blocks) else None
            last = block.kind != "row" and index == len(parts) - 1
            if last and following is not None and following.kind in ("code", "list") and _short(following):
                out.append(Unit(source, sentence, sentence + "\n\n" + "\n".join(following.lines)))
            # otherwise what it introduces is not quotable with it: the sentence is left out
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences (and table rows) of a passage worth quoting."""
    return [unit.sentence for unit in units(text)]


def _terms(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def _near_duplicate(a: frozenset[str], b: frozenset[str]) -> bool:
    return bool(a) and bool(b) and len(a & b) / len(a | b) >= 0.8


class ExtractiveAnswerer(BaseComponent):
    """Quotes the passages' sentences that best answer the question, each with its [n]."""

    embed_model: BaseEmbedding | None = Field(
        default=None,
        description="Embedder comparing sentences with the question; None scores by shared keywords (no model, no API calls).",
    )
    max_sentences: int = Field(default=3, ge=1, description="Units quoted in an answer.")
    max_passages: int = Field(default=3, ge=1, description="Best-ranked passages whose units are scored.")
    max_candidates: int = Field(default=60, ge=1, description="Most units scored per question.")
    keep_margin: float = Field(default=0.15, ge=0.0, description="Units scoring this far below the best one are left out.")
    rank_bonus: float = Field(default=0.03, ge=0.0, description="Score bonus per rank for units of better-ranked passages.")
    name_bonus: float = Field(default=0.03, ge=0.0, description="Score bonus for a unit that names a setting, command or identifier.")

    @classmethod
    def class_name(cls) -> str:
        return "ExtractiveAnswerer"

    def candidates(self, texts: Sequence[str]) -> list[Unit]:
        """Units of the best passages in passage order, each near-duplicate once (its first, best-ranked occurrence)."""
        kept: list[Unit] = []
        seen: list[frozenset[str]] = []
        # Scoring embeds every unit; lower-ranked passages' units rarely win against the rank bonus.
        for number, text in enumerate(texts[: self.max_passages], start=1):
            for unit in units(text, number):
                terms = _terms(unit.text)
                if any(_near_duplicate(terms, other) for other in seen):
                    continue
                seen.append(terms)
                kept.append(unit)
                if len(kept) == self.max_candidates:
                    return kept
        return kept

    def answer(self, question: str, texts: Sequence[str]) -> str:
        """The answer to ``question`` from passages ``texts`` ([n] cites ``texts[n-1]``)."""
        candidates = self.candidates(texts)
        if not question.strip() or not candidates:
            return NO_ANSWER
        scores = self._similarities(question, [c.sentence for c in candidates])
        scores = scores - self.rank_bonus * np.asarray([c.source - 1 for c in candidates])
        names = [bool(_NAMES_SOMETHING.search(_LINK.sub(" ", c.text))) for c in candidates]
        scores = scores + self.name_bonus * np.asarray(names)
        top = float(scores.max())
        floor = top - self.keep_margin if self.embed_model is not None else top * 0.5
        order = [int(i) for i in np.argsort(-scores, kind="stable")]
        chosen = [i for i in order[: self.max_sentences] if scores[i] >= floor and scores[i] > 0] or order[:1]
        return "".join(piece if piece.endswith("\n") else piece + " " for piece in map(_cited, (candidates[i] for i in chosen))).strip()

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


def _cited(unit: Unit) -> str:
    """The unit with its marker: after the sentence, or after the sentence that introduces a block (the block follows)."""
    if unit.text == unit.sentence:
        return f"{unit.sentence} [{unit.source}]"
    return f"{unit.sentence} [{unit.source}]{unit.text[len(unit.sentence) :]}\n\n"
