"""The page's runtime, opened once per process and settings."""

from __future__ import annotations

import logging

import streamlit as st

from app.composition import Runtime, open_runtime
from settings import Settings

logger = logging.getLogger(__name__)


def _close(runtime: Runtime) -> None:
    runtime.close()


@st.cache_resource(show_spinner="Opening the index…", on_release=_close)
def _open(key: str, _settings: Settings) -> Runtime:
    logger.info("opening the index for the page: %s", _settings.storage.milvus_uri())
    runtime = open_runtime(_settings)
    return runtime


def page_runtime(settings: Settings) -> Runtime:
    """The shared runtime for these settings (Milvus Lite allows one client per index directory)."""
    return _open(settings.model_dump_json(), settings)
