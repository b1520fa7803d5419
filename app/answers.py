"""One answer format for CLI, UI, JSON and the Python API: text with [n] markers plus numbered sources.

The synthesizer has already numbered the cited sources 1..k in the order the
answer first cites them and put them first in ``response.source_nodes``; the
passages retrieved but not cited follow, unnumbered (``n`` is None).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from integrations.citation_prompt import CITATION, CLAIM_END, source_label
from integrations.extractive_answer import split_sentences

_WORD = re.compile(r"\w+")
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


def to_answer(question: str, response: Any, answer_text: str | None = None) -> Answer:
    """Build an Answer from a LlamaIndex response (pass answer_text for a finished stream)."""
    text = answer_text if answer_text is not None else str(getattr(response, "response", "") or "")
    metadata = response.metadata or {}
    claims = cited_sentences(text)
    sources = []
    for number, scored in enumerate(response.source_nodes, start=1):
        node = scored.node
        meta = node.metadata
        body = node.get_content()
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
        sources=sources,
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
    if answer.answered_by:
        lines.append(f"Answered by: {answer.answered_by}")
    for fallback in answer.fallbacks:
        lines.append(f"  skipped: {fallback}")
    for notice in answer.notices:
        lines.append(f"Note: {notice}")
    return "\n".join(lines).rstrip() + "\n"
