"""One answer format for CLI, UI, JSON and the Python API: text with [n] markers plus numbered sources.

Sources cited come first, numbered 1..k by the synthesizer; the passages retrieved but not cited follow (``n`` None)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from integrations.citation_prompt import CITATION, CLAIM_END, source_label
from integrations.extractive_answer import split_sentences
from integrations.node_ids import parse_chunk_id
from integrations.section_context import overlap

_WORD = re.compile(r"\w+")
_FIRST_BREAK = re.compile(r"\s\S")  # where the first whole word of a text cut mid-token starts
SNIPPET_CHARS = 300


@dataclass
class Source:
    n: int | None  # None: retrieved but not cited
    source: str
    file_name: str
    label: str
    text: str
    snippet: str
    cited: bool
    page: int | None = None
    page_label: str | None = None
    section: str | None = None
    score: float | None = None
    url: str | None = None  # where the source opens (the CLI's deep link; the page makes its own)


@dataclass
class Answer:
    question: str
    answer: str
    sources: list[Source]
    answered_by: str | None
    notices: list[str] = field(default_factory=list)
    fallbacks: list[Any] = field(default_factory=list)
    weak_evidence: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cited_sentences(answer: str) -> dict[int, list[str]]:
    """For each source number, the answer sentences that cite it."""
    out: dict[int, list[str]] = {}
    for sentence in CLAIM_END.split(answer):
        for number in {int(n) for n in CITATION.findall(sentence)}:
            out.setdefault(number, []).append(CITATION.sub("", sentence))
    return out


def best_snippet(text: str, claims: list[str]) -> str:
    """The sentence of ``text`` sharing most words with the claims citing it (else its opening)."""
    sentences = split_sentences(text)
    claim_words = {w.lower() for claim in claims for w in _WORD.findall(claim)}
    if sentences and claim_words:
        best = max(sentences, key=lambda s: len(claim_words & {w.lower() for w in _WORD.findall(s)}))
        if claim_words & {w.lower() for w in _WORD.findall(best)}:
            return best[:SNIPPET_CHARS]
    flat = " ".join(text.split())
    return flat[:SNIPPET_CHARS] + ("…" if len(flat) > SNIPPET_CHARS else "")


def passage_text(node: Any) -> str:
    """A passage as shown: one that starts inside its section (a chunk cut at a token, "db`), so …") starts at its
    first whole word, after an ellipsis."""
    text = node.get_content()
    first = parse_chunk_id(node.node_id.split("..")[0])
    if first is None or first[2] == 0 or not text[:1].strip():
        return text
    cut = _FIRST_BREAK.search(text)
    return "…" + (text[cut.end() - 1 :] if cut else "")


def _joined(left: str, right: str) -> str:
    """Two passages of one section as one text, their overlap once."""
    if right in left:
        return left
    if left in right:
        return right
    if shared := overlap(left, right):
        return left + right[shared:]
    if shared := overlap(right, left):
        return right + left[shared:]
    return f"{left}\n\n…\n\n{right}"


def merge_overlapping(sources: list[Source]) -> list[Source]:
    """An uncited passage of the same file, section and page as an earlier one joins it (listed once)."""
    kept: list[Source] = []
    for source in sources:
        where = (source.source, source.section, source.page)
        twin = None if source.cited else next((k for k in kept if (k.source, k.section, k.page) == where), None)
        if twin is None:
            kept.append(source)
        else:
            twin.text = _joined(twin.text, source.text.lstrip("…"))
    return kept


def to_answer(question: str, response: Any, answer_text: str | None = None) -> Answer:
    """Build an Answer from a LlamaIndex response (pass answer_text for a finished stream)."""
    text = answer_text if answer_text is not None else str(getattr(response, "response", "") or "")
    metadata = response.metadata or {}
    claims = cited_sentences(text)
    sources = []
    for number, scored in enumerate(response.source_nodes, start=1):
        node = scored.node
        meta = node.metadata
        body = passage_text(node)
        sources.append(
            Source(
                n=number if number in claims else None,
                source=str(meta.get("source", "")),
                file_name=str(meta.get("file_name", "")),
                label=source_label(meta),
                text=body,
                snippet=best_snippet(body, claims.get(number, [])),
                cited=number in claims,
                page=meta.get("page"),
                page_label=meta.get("page_label"),
                section=meta.get("section"),
                score=scored.score,
            )
        )
    return Answer(
        question=question,
        answer=text,
        sources=merge_overlapping(sources),
        answered_by=metadata.get("answered_by"),
        notices=list(metadata.get("notices", [])),
        fallbacks=list(metadata.get("fallbacks", [])),
        weak_evidence=bool(metadata.get("weak_evidence")),
        timings_ms=dict(metadata.get("timings_ms", {})),
    )


def render_text(answer: Answer) -> str:
    """Plain-text rendering used by the CLI."""
    lines = [answer.answer.strip(), ""]
    if answer.sources:
        lines.append("Sources:")
        for source in answer.sources:
            lines.append(f"  [{source.n}] {source.label}" if source.n is not None else f"  - {source.label} (not cited)")
            lines.append(f'      "{source.snippet}"')
            if source.url:
                lines.append(f"      {source.url}")
    if answer.answered_by:
        lines.append(f"Answered by: {answer.answered_by}")
    for fallback in answer.fallbacks:
        lines.append(f"  skipped: {fallback}")
    for notice in answer.notices:
        lines.append(f"Note: {notice}")
    return "\n".join(lines).rstrip() + "\n"
