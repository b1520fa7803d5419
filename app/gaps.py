"""Documentation gaps: the logged questions the docs could not answer well, grouped by topic (docs/asking.md).

A question joins, in the order asked, the group whose common BM25 terms it shares most (at least half of the smaller
set) or whose missing name it shares. No embedder is loaded."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from app.question_log import REFUSED, WEAK, LoggedQuestion
from integrations.keyword_text import keyword_text

DAY_S = 86400
MAX_EXAMPLES = 5


@dataclass
class Gap:
    topic: str
    count: int = 0
    refused: int = 0
    weak: int = 0
    not_helpful: int = 0
    missing_names: dict[str, int] = field(default_factory=dict)
    questions: list[str] = field(default_factory=list)  # distinct, most recent first
    last_asked: float = 0.0
    _terms: set[str] = field(default_factory=set, repr=False)
    _names: set[str] = field(default_factory=set, repr=False)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


def is_gap(question: LoggedQuestion) -> bool:
    return question.outcome in (REFUSED, WEAK) or question.rating == -1


def _terms(text: str) -> set[str]:
    return set(keyword_text(text).split())


def _topic(question: str, terms: set[str]) -> str:
    """The words of ``question`` whose terms the group shares, in their order."""
    words = [w.strip("?.,;:!\"'()") for w in question.split()]
    shown = [w for w in words if w and _terms(w) & terms]
    return " ".join(dict.fromkeys(shown)) or question


def _joins(gap: Gap, terms: set[str], names: set[str]) -> int:
    """How strongly a question belongs to ``gap`` (0: not at all)."""
    if names & gap._names:
        return 1000 + len(names & gap._names)
    shared = len(terms & gap._terms)
    return shared if shared and 2 * shared >= min(len(terms), len(gap._terms)) else 0


def documentation_gaps(questions: list[LoggedQuestion], since_days: float | None = None, now: float | None = None) -> list[Gap]:
    """The gaps among ``questions`` (asked in the last ``since_days`` days when given), largest group first."""
    since = None if since_days is None else (time.time() if now is None else now) - since_days * DAY_S
    groups: list[tuple[Gap, str]] = []  # each group and the first question it was named after
    for question in questions:
        if not is_gap(question) or (since is not None and question.asked < since):
            continue
        terms, names = _terms(question.question), {n.lower() for n in question.missing_names}
        scored = [(_joins(gap, terms, names), i) for i, (gap, _) in enumerate(groups)]
        score, index = max(scored, default=(0, -1))
        if score:
            gap = groups[index][0]
            gap._terms = (gap._terms & terms) or gap._terms
        else:
            gap = Gap(topic="", _terms=terms)
            groups.append((gap, question.question))
        gap._names |= names
        gap.count += 1
        gap.refused += question.outcome == REFUSED
        gap.weak += question.outcome == WEAK
        gap.not_helpful += question.rating == -1
        for name in question.missing_names:
            gap.missing_names[name] = gap.missing_names.get(name, 0) + 1
        if question.question not in gap.questions:
            gap.questions.insert(0, question.question)
        gap.last_asked = max(gap.last_asked, question.asked)
    for gap, first in groups:
        gap.topic = ", ".join(Counter(gap.missing_names).keys()) if gap.missing_names else _topic(first, gap._terms)
    return sorted((gap for gap, _ in groups), key=lambda g: (-g.count, -g.last_asked))


def format_gaps(gaps: list[Gap]) -> str:
    if not gaps:
        return "no documentation gaps: every logged question was answered with cited sources\n"
    lines = [f"{'questions':>9} {'refused':>7} {'weak':>5} {'👎':>3}  topic"]
    for gap in gaps:
        lines.append(f"{gap.count:>9} {gap.refused:>7} {gap.weak:>5} {gap.not_helpful:>3}  {gap.topic}")
        if gap.missing_names:
            names = ", ".join(f"{name} ({n})" for name, n in gap.missing_names.items())
            lines.append(f"{'':>28}in no passage: {names}")
        for question in gap.questions[:MAX_EXAMPLES]:
            lines.append(f"{'':>28}- {question}")
    return "\n".join(lines) + "\n"


def _cell(value: object) -> object:
    """A cell a spreadsheet shows as text: questions are typed by anyone, and "=..." would run as a formula."""
    return f"'{value}" if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def gaps_csv(gaps: list[Gap]) -> str:
    """One row per gap: counts, missing names and example questions joined by ' | '."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["topic", "questions", "refused", "weak", "not_helpful", "missing_names", "examples", "last_asked"])
    for gap in gaps:
        row = [
            gap.topic,
            gap.count,
            gap.refused,
            gap.weak,
            gap.not_helpful,
            " | ".join(gap.missing_names),
            " | ".join(gap.questions[:MAX_EXAMPLES]),
            time.strftime("%Y-%m-%d %H:%M", time.gmtime(gap.last_asked)),
        ]
        writer.writerow([_cell(v) for v in row])
    return out.getvalue()
