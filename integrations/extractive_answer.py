"""Answers without a language model: the passages' own units that answer the question, cited, or a refusal.

What is quoted and how units are chosen: docs/asking.md ("Answers without a language model"), docs/design-notes.md."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field
from llama_index.core.schema import BaseComponent

from integrations.evidence_filter import missing_names_notice
from integrations.keyword_text import content_terms, keyword_text
from integrations.question_context import QuestionContext
from integrations.section_context import SECTION_SEPARATOR

EXTRACTIVE_NAME = "extractive"
NO_ANSWER = "The documentation provided does not contain an answer to this question."
NOT_COVERED = "The documentation does not seem to cover this question."
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"'(\[])")
_WHITESPACE = re.compile(r"\s+")
_LIST_ITEM = re.compile(r"^(?:[-*+]|\d+[.)])\s+")
_WORD = re.compile(r"\w+")
#: A code span, a --flag, or an identifier (snake_case, dotted.name, camelCase, UPPER_CASE).
_NAMES_SOMETHING = re.compile(r"`[^`]+`|(?<![\w-])--?[A-Za-z][\w-]+|\b\w+_\w+|\b[A-Za-z]\w+(?:\.\w{2,})+|\b[a-z]+[A-Z]\w*")
#: Links and their targets: a URL names no setting.
_LINK = re.compile(r"\]\([^)]*\)|<?https?://\S+")
#: A sentence that leans on the one before it.
_LEANS_BACK = re.compile(
    r"^(?:this|that|these|those|it|its|they|them|their|such|also|however|otherwise|instead|then|thus|hence)\b"
    r"|^(?:for|in|with|because of|despite|after|given|by) (?:this|that|these|those|such)\b",
    re.I,
)
#: A sentence that points at text the answer does not quote.
_POINTS_ELSEWHERE = re.compile(
    r"\b(?:next|previous|following|preceding|last) (?:section|chapter|page|paragraph)\b"
    r"|\b(?:see|as|shown|described|mentioned|listed|explained) (?:above|below)\b",
    re.I,
)
#: Raw markup outside code spans (an HTML leftover, a forged prompt tag).
_MARKUP = re.compile(r"</?[A-Za-z][\w-]*(?:\s[^<>]*)?>")
_CODE_SPAN = re.compile(r"`[^`]*`")
#: An MkDocs admonition's marker before its text ('!!! note "Title"').
_ADMONITION = re.compile(r"^\s*[!?]{3}\+?\s*\w+(?:\s+\"[^\"]*\")?\s*")
#: A demonstrative that points at something named before ("this environment variable", "these settings").
_REFERS_BACK = re.compile(r"\b(?:this|these|those|such)\s+(?!is\b|are\b|was\b|were\b|means\b|way\b)[a-z]", re.I)
_MIN_WORDS = 4
#: List items, table rows and headings are definitions: "Defaults to `['GET']`." answers on its own.
_MIN_ITEM_WORDS = 2
MAX_ITEM_WORDS = 40
#: A block (code or list) longer than this is too long to quote with the sentence that introduces it.
MAX_BLOCK_LINES = 12
#: A unit with at most this share of terms outside the question's restates it ("Flask uses thread-local objects").
RESTATE_NEW_SHARE = 1 / 3
MAX_BLOCK_CHARS = 700

#: Where release notes live (a file or section name), and a question about what changed.
_RELEASE_NOTES = re.compile(r"\brelease[-_ ]?notes?\b|\breleases?/|\bchange[-_ ]?log|\bwhat'?s[-_ ]new\b|\bnews\b|\bhistory\b", re.I)
_ASKS_CHANGES = re.compile(
    r"\bchanged\b|\bchanges (?:in|to|between|since)\b|\bwhat'?s new\b|\bnew in\b|\b(?:added|removed|deprecated|introduced)\b"
    r"|\brelease|\bversions?\s*\d|\bupgrad|\bsince\s+\d|\bbreaking\b",
    re.I,
)
#: What a question asks for, and what a unit that gives it contains.
_ASKS = {
    "person": re.compile(r"^\s*(?:who|whom|whose)\b", re.I),
    "cause": re.compile(r"\bwhy\b|\bwhat (?:is|are) the (?:reason|purpose|point|advantage|benefit|drawback)s?\b", re.I),
    "value": re.compile(
        r"\bdefaults?\b|\bhow (?:many|much|long|big|large|often|old)\b|\bwhat (?:size|port|limit|value|version|timeout|type|format)\b"
        r"|\b(?:maximum|minimum|limit)\b",
        re.I,
    ),
    "step": re.compile(
        r"\bhow (?:do|can|should|would|could|to|does one|is)\b"
        r"|\b(?:what|which) (?:command|setting|option|flag|function|method|class|argument|parameter|backend|converter|field)s?\b",
        re.I,
    ),
    "place": re.compile(r"^\s*where\b|\bwhere (?:is|are|do|does|can)\b|\bwhich (?:folder|directory|file|path)\b", re.I),
}
_GIVES = {
    "person": re.compile(r"(?<![.!?:]\s)(?<!^)\b[A-Z][a-z]+ [A-Z][a-z]+\b|@\w+|\b[\w.]+@[\w.]+\b"),
    "cause": re.compile(
        r"\b(?:because|since|so that|in order to|to avoid|to prevent|otherwise|due to|reason|drawbacks?|downsides?|which means"
        r"|this means|as a result|therefore|at the cost|trade-?offs?|advantages?|benefits?|allows?|lets?|ensures?)\b",
        re.I,
    ),
    "value": re.compile(
        r"\d|\bdefault(?:s| value)?(?: is| to| of)?:? `[^`]+`|\b(?:true|false|none|null)\b|['\"][^'\"]+['\"]"
        r"|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|thirty|sixty|hundred|thousand)\b",
        re.I,
    ),
    "step": _NAMES_SOMETHING,
    "place": re.compile(r"[~.]?/\w|\\\w|\b\w+\.\w{2,4}\b|`[^`]+`"),
}


@dataclass
class Unit:
    """One quotable piece of a passage: what is scored (``sentence``) and what is quoted (``text``)."""

    source: int  # 1-based passage number
    sentence: str
    text: str
    #: The sentence this one leans on ("It ..." after it), quoted before it.
    lead: str = ""
    #: The heading above it in the passage, and the path of headings down to it: what its section is about.
    heading: str = ""
    context: str = ""


@dataclass
class Choice:
    """The units chosen for an answer, or a refusal naming what the documents never mention (``missing``)."""

    units: list[Unit] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return not self.units

    @property
    def text(self) -> str:
        if self.missing:
            return f"{NOT_COVERED} {missing_names_notice(self.missing)}"
        if not self.units:
            return NO_ANSWER
        quoted: set[str] = set()  # each sentence once: a lead before the unit that leans on it, not again on its own
        pieces = []
        for unit in self.units:
            if unit.sentence not in quoted:
                pieces.append(_cited(unit, unit.lead not in quoted))
                quoted |= {unit.sentence, unit.lead}
        return "".join(piece if piece.endswith("\n") else piece + " " for piece in pieces).strip()


@dataclass
class _Block:
    kind: str  # "paragraph", "code", "list", "row" (its cells), "header" (a row naming the columns), "heading"
    lines: list[str]


def _blocks(text: str) -> list[_Block]:
    """Paragraphs, code fences, lists, table rows and headings of Markdown-ish text."""
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
        if not line or set(line) <= set("|-: "):
            if line and blocks and blocks[-1].kind == "row" and "-" in line:
                blocks[-1].kind = "header"  # the row above a |---| line names the columns
            flush()
            continue
        if line.startswith("#"):
            flush()
            blocks.append(_Block("heading", [line]))  # with its #s: its level
            continue
        if line.startswith("|"):
            flush()
            blocks.append(_Block("row", [c.strip() for c in line.strip("|").split("|")]))  # its cells
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
    if fence is not None and len(fence) > 1:  # a fence the chunk cut off: still code
        blocks.append(_Block("code", fence))
    return blocks


def _quotable(sentence: str, min_words: int = _MIN_WORDS) -> str | None:
    sentence = _ADMONITION.sub("", _WHITESPACE.sub(" ", sentence)).strip(" -*>")
    if len(sentence.split()) >= min_words and sum(ch.isalpha() for ch in sentence) >= 8 and not _cut(sentence):
        return sentence
    return None


def _cut(sentence: str) -> bool:
    """A piece of a sentence cut at a chunk's edge: a bracket or bold mark it does not open or close."""
    text = _CODE_SPAN.sub("", sentence)
    return text.count("(") != text.count(")") or text.count("[") != text.count("]") or text.count("**") % 2 == 1


def _short(block: _Block) -> bool:
    return len(block.lines) <= MAX_BLOCK_LINES and sum(len(line) for line in block.lines) <= MAX_BLOCK_CHARS


def units(text: str, source: int = 1) -> list[Unit]:
    """The quotable units of one passage, in passage order."""
    out: list[Unit] = []
    blocks = _blocks(text)
    path: list[tuple[int, str]] = []  # the headings above, (level, text)
    columns: list[str] = []  # the header of the table being read
    intro = ""  # the sentence introducing it ("The gateway reads these settings:")
    for position, block in enumerate(blocks):
        previous = ""  # the sentence before in this paragraph, for a sentence that leans on it
        if block.kind == "code":
            continue
        if block.kind == "heading":
            level, heading = len(block.lines[0]) - len(block.lines[0].lstrip("#")), block.lines[0].lstrip("#").strip()
            path = [*(p for p in path if p[0] < level), (level, heading)]
            if _NAMES_SOMETHING.search(heading) and _quotable(heading, 1):
                out.append(Unit(source, heading, heading, heading=heading))  # an API's name answers "which function ..."
            continue
        heading, context = (path[-1][1], SECTION_SEPARATOR.join(h for _, h in path)) if path else ("", "")
        if block.kind == "header":
            columns = block.lines
            continue
        if block.kind != "row":
            columns, intro = [], ""
        item = block.kind in ("list", "row")
        lines = [_LIST_ITEM.sub("", line) for line in block.lines] if block.kind == "list" else block.lines
        if block.kind == "row":  # "Setting: timeout; Default: 30 s" when the table names its columns
            pairs = zip(columns, block.lines, strict=False) if len(columns) == len(block.lines) else (("", c) for c in block.lines)
            lines = ["; ".join(f"{h}: {c}" if h else c for h, c in pairs if c)]
        if block.kind == "paragraph":
            lines = [" ".join(lines)]
        # A list item or row is one definition ("methods: the HTTP methods. Defaults to `['GET']`."), unless long.
        parts = [p for line in lines for p in ([line] if item and len(line.split()) <= MAX_ITEM_WORDS else _SENTENCE_END.split(line))]
        following = blocks[position + 1] if position + 1 < len(blocks) else None
        for index, part in enumerate(parts):
            sentence = _quotable(part, _MIN_ITEM_WORDS if item else _MIN_WORDS)
            if sentence is None:
                continue
            points = bool(_REFERS_BACK.search(sentence))
            lead = ""
            if points or _LEANS_BACK.match(sentence):
                # "If this environment variable is set …" under "`SSL_CERT_FILE`": the heading is what it means
                lead = heading if (points or not previous) and _NAMES_SOMETHING.search(heading) else previous
            previous = sentence
            if sentence.endswith("?") or _POINTS_ELSEWHERE.search(sentence) or _MARKUP.search(_CODE_SPAN.sub("", sentence)):
                continue  # a question is not an answer; a pointer to a passage not quoted says nothing; markup is no prose
            if block.kind == "row":
                lead = intro  # a row is quoted after the sentence introducing its table
            last = block.kind != "row" and index == len(parts) - 1
            if last and sentence.endswith(":") and following is not None and following.kind in ("header", "row"):
                intro = sentence
            introduces = last and following is not None and following.kind in ("code", "list") and _short(following)
            if introduces and (sentence.endswith(":") or following.kind == "code"):
                block_text = "\n".join(following.lines)  # type: ignore[union-attr]
                out.append(Unit(source, sentence, sentence + "\n\n" + block_text, lead, heading, context))
            elif not sentence.endswith(":"):
                out.append(Unit(source, sentence, sentence, lead, heading, context))
            # otherwise what it introduces is not quotable with it: the sentence is left out
    return out


def place(metadata: Mapping[str, Any]) -> str:
    """Where a passage is from, as :meth:`ExtractiveAnswerer.choose` reads its ``places``: file and section."""
    return f"{metadata.get('source') or ''} > {metadata.get('section') or ''}"


def scored_text(unit: Unit) -> str:
    """What is compared with the question: the unit's sentence (with the list it introduces) after the headings above it."""
    block = unit.text[len(unit.sentence) :].strip()
    body = unit.text if block and not block.startswith(("```", "~~~")) else unit.sentence
    return f"{unit.context}: {body}" if unit.context else body


def split_sentences(text: str) -> list[str]:
    """The sentences (and table rows) of a passage worth quoting."""
    return [unit.sentence for unit in units(text)]


def _words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def _near_duplicate(a: frozenset[str], b: frozenset[str], threshold: float = 0.8) -> bool:
    return bool(a) and bool(b) and len(a & b) / len(a | b) >= threshold


def asks_for(question: str) -> list[str]:
    """What kinds of unit answer the question: person, cause, value, step, place (none: any)."""
    return [kind for kind, pattern in _ASKS.items() if pattern.search(question)]


class ExtractiveAnswerer(BaseComponent):
    """Quotes the passages' units that answer the question, each with its [n], or refuses."""

    embed_model: BaseEmbedding | None = Field(
        default=None, description="Embedder comparing sentences with the question; None scores by shared keywords (no model, no API calls)."
    )
    max_sentences: int = Field(default=3, ge=1, description="Units quoted in an answer.")
    max_passages: int = Field(default=3, ge=1, description="Best-ranked passages whose units are scored.")
    max_candidates: int = Field(default=60, ge=1, description="Most units scored per question.")
    keep_margin: float = Field(default=0.15, ge=0.0, description="Units scoring this far below the best one are left out.")
    rank_bonus: float = Field(default=0.03, ge=0.0, description="Score bonus per rank for units of better-ranked passages.")
    name_bonus: float = Field(default=0.08, ge=0.0, description="Score bonus for a unit that names a setting, command or identifier.")
    form_bonus: float = Field(
        default=0.1, ge=0.0, description="Score bonus for a unit giving what the question asks for (a name, value, step, cause, place)."
    )
    coverage_weight: float = Field(
        default=0.5, ge=0.0, description="Score bonus for the share of the question's terms a unit adds to those already chosen."
    )
    notes_penalty: float = Field(
        default=0.15, ge=0.0, description="Score penalty for units of release notes when the question does not ask what changed."
    )
    restate_penalty: float = Field(default=0.2, ge=0.0, description="Score penalty for a unit whose terms are nearly all the question's.")

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
                terms = _words(unit.text)
                if any(_near_duplicate(terms, other) for other in seen):
                    continue
                seen.append(terms)
                kept.append(unit)
                if len(kept) == self.max_candidates:
                    return kept
        return kept

    def answer(self, question: str, texts: Sequence[str]) -> str:
        """The answer to ``question`` from passages ``texts`` ([n] cites ``texts[n-1]``), or :data:`NO_ANSWER`."""
        return self.choose(question, texts).text

    def choose(self, question: str, texts: Sequence[str], context: QuestionContext | None = None, places: Sequence[str] = ()) -> Choice:
        """The units that answer ``question``, best first, or a refusal when ``context`` names what no passage mentions.

        ``places`` (file and section of each passage) marks release notes, which answer what changed, not how to.
        """
        if context is not None and context.missing_names:
            return Choice(missing=list(context.missing_names))
        asked = frozenset(content_terms(question))
        candidates = self.candidates(texts)
        if not question.strip() or not candidates:
            return Choice()
        scores = self._base_scores(question, candidates, asked)
        if not _ASKS_CHANGES.search(question):
            notes = {n for n, place in enumerate(places, start=1) if _RELEASE_NOTES.search(place)}
            scores = scores - self.notes_penalty * np.asarray([c.source in notes for c in candidates])
        bags = [frozenset(content_terms(f"{c.context} {c.lead} {c.text}")) for c in candidates]  # its headings say what it is about
        weights = self._weights(asked, bags)
        total = sum(weights.values()) or 1.0
        top = float(scores.max())
        floor = top - self.keep_margin if self.embed_model is not None else top * 0.5
        chosen: list[int] = []
        covered: set[str] = set()
        shown: list[frozenset[str]] = []
        while len(chosen) < self.max_sentences:
            gains = np.asarray([sum(weights.get(t, 0.0) for t in (bag & asked) - covered) / total for bag in bags])
            ranked = scores + self.coverage_weight * gains
            best = next(
                (
                    int(i)
                    for i in np.argsort(-ranked, kind="stable")
                    if int(i) not in chosen
                    and not any(_near_duplicate(_words(candidates[int(i)].text), s, 0.6) for s in shown)
                    and not any(candidates[int(i)].sentence in candidates[j].text for j in chosen)  # a list item quoted with its list
                ),
                None,
            )
            # The first unit is always the best; later ones must be close to it or add question terms.
            if best is None or (chosen and scores[best] < floor and gains[best] <= 0) or (chosen and ranked[best] <= 0):
                break
            chosen.append(best)
            covered |= bags[best] & asked
            shown.append(_words(candidates[best].text))
        return Choice(units=[candidates[i] for i in chosen])

    def _base_scores(self, question: str, candidates: list[Unit], asked: frozenset[str]) -> np.ndarray:
        # Compared with its headings: "Its maintainer is …" under "Quokka gateway > Maintainers" says whose.
        scores = self._similarities(question, [scored_text(c) for c in candidates])
        scores = scores - self.rank_bonus * np.asarray([c.source - 1 for c in candidates])
        names = [bool(_NAMES_SOMETHING.search(_LINK.sub(" ", c.text))) for c in candidates]
        scores = scores + self.name_bonus * np.asarray(names)
        kinds = asks_for(question)
        if kinds:
            gives = [any(_GIVES[k].search(_LINK.sub(" ", c.text)) for k in kinds) for c in candidates]
            scores = scores + self.form_bonus * np.asarray(gives)
        if asked:
            own = [frozenset(content_terms(c.sentence)) for c in candidates]
            restates = [bool(terms) and len(terms - asked) <= len(terms) * RESTATE_NEW_SHARE for terms in own]
            scores = scores - self.restate_penalty * np.asarray(restates)
        return scores

    @staticmethod
    def _weights(asked: frozenset[str], bags: list[frozenset[str]]) -> dict[str, float]:
        """Each question term's weight: rarer among the candidate units counts more (absent ones most)."""
        n = len(bags)
        return {term: math.log(1 + n / (1 + sum(term in bag for bag in bags))) for term in asked}

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


def _cited(unit: Unit, with_lead: bool = True) -> str:
    """The unit with its marker (after the sentence it leans on too): after the sentence, or before the block it introduces."""
    lead = f"{unit.lead} [{unit.source}] " if unit.lead and with_lead else ""
    if unit.text == unit.sentence:
        return f"{lead}{unit.sentence} [{unit.source}]"
    return f"{lead}{unit.sentence} [{unit.source}]{unit.text[len(unit.sentence) :]}\n\n"
