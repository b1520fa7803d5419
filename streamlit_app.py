"""docsrag web page: ask questions about your documentation and see the cited sources."""

from __future__ import annotations

import streamlit as st

from app.answers import Answer, to_answer
from app.composition import Runtime, build_query_engine, open_runtime
from settings import load_settings

st.set_page_config(page_title="docsrag", page_icon="📚", layout="wide")


@st.cache_resource(show_spinner="Opening the index…")
def runtime() -> Runtime:
    return open_runtime(load_settings())


def show_answer(answer: Answer) -> None:
    st.markdown(answer.answer)
    for notice in answer.notices:
        st.caption(notice)
    if answer.sources:
        st.markdown("**Sources**")
        for source in answer.sources:
            with st.expander(f"[{source.n}] {source.label}"):
                st.markdown(f"> {source.snippet}")
                st.code(source.text, language=None, wrap_lines=True)
    if answer.answered_by:
        st.caption(f"Answered by {answer.answered_by}")


st.title("docsrag")
st.caption("Answers from your documentation, with numbered sources.")

rt = runtime()
if "history" not in st.session_state:
    st.session_state.history = []

for past in st.session_state.history:
    with st.chat_message("user"):
        st.markdown(past.question)
    with st.chat_message("assistant"):
        show_answer(past)

question = st.chat_input("Ask about the documentation")
if question:
    with st.chat_message("user"):
        st.markdown(question)
    with st.chat_message("assistant"), st.spinner("Searching the documentation…"):
        response = build_query_engine(runtime=rt).query(question)
        answer = to_answer(question, response)
        show_answer(answer)
    st.session_state.history.append(answer)
