"""docsrag web page (``make run``): a thin shell over the composition root, app/ui/ and app/chat.py."""

from __future__ import annotations

import streamlit as st

from app.composition import quiet_noisy_loggers
from app.ui.conversation import Turn, ask, retry_question, show_turn
from app.ui.gaps_view import render_gaps
from app.ui.library import documents
from app.ui.links import SourceLinks
from app.ui.render import page_style
from app.ui.runtime import page_runtime
from app.ui.safe_markdown import escape
from app.ui.sidebar import GAPS_VIEW, follow_ingestion, ingest_on_first_start, render_sidebar
from settings import load_settings

st.set_page_config(page_title="docsrag", page_icon="📚", layout="wide")
page_style()
quiet_noisy_loggers()

EMPTY_STATE = (
    "**No documents are indexed yet.** Add files with **Upload files** in the sidebar "
    "(PDF, Markdown, HTML, reST, text or code) and press **Add to index**. "
    "To index a whole folder, stop this page and run `python -m app ingest <folder>`, then start the page again "
    "(Milvus Lite lets one process at a time use an index)."
)

st.title("Ask your documentation")
st.caption("Answers quote your documents and cite them with numbered sources.")
try:
    settings = load_settings()
    runtime = page_runtime(settings)
except (ValueError, RuntimeError) as exc:
    st.error(f"docsrag could not start: {escape(str(exc))}")
    st.stop()

if ingest_on_first_start(runtime):  # e.g. a new Space: index the bundled docs, then show the page
    st.rerun()
choices = render_sidebar(runtime)
if choices.view == GAPS_VIEW:
    render_gaps(settings, runtime.question_log)
    follow_ingestion(choices.ingest_bar)
    st.stop()
if not choices.has_documents:
    st.info(EMPTY_STATE, icon="📂")

links = SourceLinks(settings.sources.base_url, documents(settings))
turns: list[Turn] = st.session_state.setdefault("turns", [])
for number, turn in enumerate(turns, start=1):
    show_turn(turn, retry_key=f"retry-{number}" if number == len(turns) else None, links=links, log=runtime.question_log)

placeholder = "Ask about the documentation" if choices.has_documents else "Add documents first (sidebar)"
question = st.chat_input(placeholder, disabled=not choices.has_documents) or retry_question()
if question:
    ask(runtime, turns, question, choices.sources, choices.streaming, links)
follow_ingestion(choices.ingest_bar)
