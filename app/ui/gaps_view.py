"""The page's "Documentation gaps" view: the report of ``python -m app gaps`` for the people who write the docs."""

from __future__ import annotations

import time

import streamlit as st

from app.gaps import documentation_gaps, gaps_csv
from app.question_log import QuestionLog
from app.ui.safe_markdown import escape
from settings import Settings

PERIODS = {"Last 7 days": 7.0, "Last 30 days": 30.0, "All time": None}


def render_gaps(settings: Settings, log: QuestionLog | None) -> None:
    st.header("Documentation gaps")
    st.caption(
        "Questions the documentation could not answer well: refused, answered on weak evidence, or rated not helpful, "
        "grouped by topic. The same report: `python -m app gaps`."
    )
    period = st.radio("Asked", list(PERIODS), index=1, horizontal=True, key="gaps-period")
    if log is None:
        st.info("Question logging is off (feedback.log_questions): new questions are not logged.", icon="ℹ️")
        earlier = QuestionLog.beside(settings.storage.index_dir)  # what was logged before it was turned off
        try:
            questions = earlier.questions()
        finally:
            earlier.close()
    else:
        questions = log.questions()
    gaps = documentation_gaps(questions, PERIODS[period])
    if not gaps:
        st.success("No gaps: every logged question in this period was answered with cited sources.")
        return
    rows = [
        {
            "topic": gap.topic,
            "questions": gap.count,
            "refused": gap.refused,
            "weak": gap.weak,
            "not helpful": gap.not_helpful,
            "in no passage": ", ".join(gap.missing_names),
            "last asked": time.strftime("%Y-%m-%d %H:%M", time.localtime(gap.last_asked)),
        }
        for gap in gaps
    ]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.download_button("Download CSV", gaps_csv(gaps), file_name="documentation-gaps.csv", mime="text/csv", icon="⬇️")
    for gap in gaps:
        with st.expander(f"{escape(gap.topic)} · {gap.count} question{'s' if gap.count > 1 else ''}"):
            st.markdown("\n".join(f"- {escape(question)}" for question in gap.questions))
