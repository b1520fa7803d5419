"""The page's runtime, opened once per process and settings."""

from __future__ import annotations

import logging
import threading

import streamlit as st
from llama_index.core.utils import get_tokenizer

from app.composition import Runtime, open_runtime
from settings import Settings

logger = logging.getLogger(__name__)


@st.cache_resource(show_spinner="Opening the index…", on_release=Runtime.close)
def _open(key: str, _settings: Settings) -> Runtime:
    logger.info("opening the index for the page: %s", _settings.storage.milvus_uri())
    runtime = open_runtime(_settings, reader=True)
    # The chat memory counts tokens with LlamaIndex's tokenizer, which loads at first use: load it while the page draws,
    # not during the first question.
    threading.Thread(target=get_tokenizer, name="docsrag-load-tokenizer", daemon=True).start()
    return runtime


def page_runtime(settings: Settings) -> Runtime:
    """The shared runtime for these settings (Milvus Lite allows one client per index directory). One opened while an
    ingest in another process held the index reads through that ingest's store; once the ingest ends it is opened again."""
    runtime = _open(settings.model_dump_json(), settings)
    if runtime.stale():
        _open.clear()  # closes it (on_release)
        runtime = _open(settings.model_dump_json(), settings)
    return runtime
