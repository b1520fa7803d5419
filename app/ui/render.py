"""How an answer looks on the page: text with [n] markers, numbered cited sources, backend and timings.

Everything taken from documents or answers goes through app.ui.safe_markdown: it can change how text looks, nothing else."""

from __future__ import annotations

import streamlit as st

from app.answers import Answer, Source
from app.ui.links import SourceLinks
from app.ui.safe_markdown import escape, passage, snippet

STAGES = {stage: stage.replace("_", " ") for stage in ("condense", "retrieve", "rerank", "generate", "first_token", "total")}


# Passages are the documents' own Markdown: a table with a long cell (an identifier, a signature) would widen the whole
# page and give it a horizontal scrollbar. Tables scroll inside their own box instead, and code spans may break.
PAGE_STYLE = """<style>
[data-testid="stMarkdownContainer"] table { display: block; max-width: 100%; overflow-x: auto; }
[data-testid="stMarkdownContainer"] code { overflow-wrap: anywhere; }
</style>"""


def page_style() -> None:
    """The page's own CSS (a style-only st.html takes no space)."""
    st.html(PAGE_STYLE)


def answer_markdown(text: str) -> str:
    """Answer text for st.markdown: its Markdown kept, nothing live (answers quote documents)."""
    return passage(text)


def location(source: Source) -> str:
    """'p. 6 (4) · 2 Usage': page (with the printed label when it differs) and section path."""
    parts = []
    if source.page is not None:
        label = f" ({source.page_label})" if source.page_label and str(source.page_label) != str(source.page) else ""
        parts.append(f"p. {source.page}{label}")
    if source.section:
        parts.append(source.section)
    return " · ".join(parts)


def source_heading(source: Source, numbered: bool = True) -> str:
    where = location(source)
    name = source.file_name or source.source
    return (f"[{source.n}] " if numbered else "") + name + (f" — {where}" if where else "")


def render_source(source: Source, question: str, links: SourceLinks | None, numbered: bool = True) -> None:
    with st.container(border=True):
        heading = f"**{escape(source_heading(source, numbered))}**"
        url = links.url(source) if links else None
        if url:  # our own link (the published page or the page-served PDF), never one from the document
            heading += f" · [open ↗]({url.replace(')', '%29')})"
        st.markdown(heading)
        st.markdown(f"> “{snippet(source.snippet, question)}”")
        label = f"Full passage [{source.n}]" if numbered else f"Full passage: {source.file_name or source.source}"
        with st.expander(label):
            st.markdown(passage(source.text, question))


def render_sources(answer: Answer, question: str, links: SourceLinks | None = None) -> None:
    """Cited sources in the order of their numbers (the [n] markers); passages retrieved but not cited folded away,
    unnumbered."""
    cited = sorted((s for s in answer.sources if s.cited), key=lambda s: s.n)
    others = [s for s in answer.sources if not s.cited]
    if cited:
        st.markdown("**Sources**")
        for source in cited:
            render_source(source, question, links)
    if others:
        with st.expander(f"{len(others)} more passage{'s' if len(others) > 1 else ''} retrieved but not cited"):
            for source in others:
                render_source(source, question, links, numbered=False)


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


def timings_line(timings_ms: dict[str, float]) -> str:
    """'retrieve 23 ms · rerank 0 ms · generate 41 ms · total 70 ms'."""
    known = [f"{STAGES[stage]} {timings_ms[stage]:,.0f} ms" for stage in STAGES if stage in timings_ms]
    other = [f"{stage} {value:,.0f} ms" for stage, value in timings_ms.items() if stage not in STAGES]
    return " · ".join(known + other)


def render_answer(answer: Answer, question: str, searched_for: str | None = None, links: SourceLinks | None = None) -> None:
    """Everything under the answer text (what was searched is shown by the conversation): backend, sources, timings."""
    render_backend(answer)
    render_sources(answer, searched_for or question, links)
    if answer.timings_ms:
        st.caption(escape(timings_line(answer.timings_ms)), help="Time per stage of this answer, in milliseconds.")
