"""👍/👎 under each answer, with an optional comment: stored in the question log for the documentation-gaps report."""

from __future__ import annotations

import streamlit as st

from app.question_log import QuestionLog

THUMBS = {1: True, 0: False}  # st.feedback("thumbs"): 1 is 👍, 0 is 👎


def _save(log: QuestionLog, question_id: int) -> None:
    rating = st.session_state.get(f"rating-{question_id}")
    if rating is not None:
        log.feedback(question_id, THUMBS[rating], st.session_state.get(f"comment-{question_id}", ""))


def render_feedback(log: QuestionLog | None, question_id: int | None) -> None:
    """The rating buttons of one logged answer; once rated, a comment box (saved when it changes)."""
    if log is None or question_id is None:
        return
    rating = st.feedback("thumbs", key=f"rating-{question_id}", on_change=_save, args=(log, question_id))
    if rating is None:
        return
    st.text_input(
        "What was missing or wrong? (optional)" if rating == 0 else "Anything to add? (optional)",
        key=f"comment-{question_id}",
        on_change=_save,
        args=(log, question_id),
        max_chars=500,
        placeholder="Press Enter to send",
    )
    st.caption("Thank you: the docs team sees this in the documentation-gaps report.")
