"""How an answer looks on the page: text with [n] markers, numbered sources with highlighted snippets, backend and timings."""

from __future__ import annotations

import re

import streamlit as st

from app.answers import Answer, Source
from integrations.keyword_text import keyword_text

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")
_TOKEN = re.compile(r"[A-Za-z0-9][\w.\-/]*[A-Za-z0-9]|\w+")
_HEADING_MARK = re.compile(r"(?:^|\s)#{1,6}(?=\s)")  # Markdown heading marks left in a flattened chunk opening
_CODE_SPAN = re.compile(r"(```.*?```|`[^`\n]*`)", re.DOTALL)
HIGHLIGHT = ":orange-background[{}]"
STAGES = {
    "condense": "condense follow-up",
    "retrieve": "retrieve (dense + BM25)",
    "rerank": "rerank",
    "generate": "generate answer",
    "first_token": "first streamed token (from asking)",
    "total": "total (retrieve to answer)",
}


def escape(text: str) -> str:
    """Plain text shown literally by st.markdown (no emphasis, links, math or colour directives)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def answer_markdown(text: str) -> str:
    """Answer text for st.markdown: Markdown kept, but a '$' outside code never starts math."""
    parts = _CODE_SPAN.split(text)
    return "".join(part if index % 2 else part.replace("$", "\\$") for index, part in enumerate(parts))


def highlight(snippet: str, question: str) -> str:
    """The snippet as Markdown with the words that match the question (same stem, as BM25 sees them) highlighted."""
    wanted = set(keyword_text(question).split())
    out: list[str] = []
    position = 0
    flat = _HEADING_MARK.sub(" ", " ".join(snippet.split())).strip()
    for match in _TOKEN.finditer(flat):
        out.append(escape(flat[position : match.start()]))
        word = match.group(0)
        terms = set(keyword_text(word).split())
        out.append(HIGHLIGHT.format(escape(word)) if terms and terms & wanted else escape(word))
        position = match.end()
    out.append(escape(flat[position:]))
    return "".join(out)


def location(source: Source) -> str:
    """'p. 6 (4) · 2 Usage': page (with the printed label when it differs) and section path."""
    parts = []
    if source.page is not None:
        label = f" ({source.page_label})" if source.page_label and str(source.page_label) != str(source.page) else ""
        parts.append(f"p. {source.page}{label}")
    if source.section:
        parts.append(source.section)
    return " · ".join(parts)


def source_heading(source: Source) -> str:
    where = location(source)
    return f"[{source.n}] {source.file_name or source.source}" + (f" — {where}" if where else "")


def render_source(source: Source, question: str) -> None:
    with st.container(border=True):
        st.markdown(f"**{escape(source_heading(source))}**")
        st.markdown(f"> “{highlight(source.snippet, question)}”")
        with st.expander(f"Full passage [{source.n}]"):
            st.code(source.text, language=None, wrap_lines=True)


def render_sources(answer: Answer, question: str) -> None:
    """Cited sources in full; sources retrieved but not cited folded away. Numbers match the [n] markers."""
    cited = [s for s in answer.sources if s.cited]
    others = [s for s in answer.sources if not s.cited]
    if cited:
        st.markdown("**Sources**")
        for source in cited:
            render_source(source, question)
    if others:
        with st.expander(f"{len(others)} more passage{'s' if len(others) > 1 else ''} retrieved but not cited"):
            for source in others:
                render_source(source, question)


def render_backend(answer: Answer) -> None:
    if answer.answered_by:
        st.caption(f"Answered by **{escape(answer.answered_by)}**")
    elif answer.weak_evidence:
        st.caption("Not answered: no passage in the documents was close enough to the question.")
    if answer.fallbacks:
        reasons = "\n".join(f"- {escape(str(reason))}" for reason in answer.fallbacks)
        st.warning(f"Answered by a fallback backend. Skipped:\n{reasons}", icon="↪️")
    for notice in answer.notices:
        st.caption(escape(notice))


def render_timings(timings_ms: dict[str, float]) -> None:
    if not timings_ms:
        return
    with st.expander("Timings"):
        rows = [f"| {STAGES.get(stage, stage)} | {timings_ms[stage]:,.0f} ms |" for stage in STAGES if stage in timings_ms]
        rows += [f"| {stage} | {value:,.0f} ms |" for stage, value in timings_ms.items() if stage not in STAGES]
        st.markdown("| stage | time |\n|---|---:|\n" + "\n".join(rows))


def render_answer(answer: Answer, question: str, searched_for: str | None = None) -> None:
    """Everything under the answer text: what was searched, backend, sources, timings."""
    if searched_for and searched_for != question:
        st.caption(f"Searched for: {escape(searched_for)}")
    render_backend(answer)
    render_sources(answer, searched_for or question)
    render_timings(answer.timings_ms)
