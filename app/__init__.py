"""docsrag: question answering with citations over a folder of technical documentation."""

from app.composition import build_query_engine, open_runtime

__all__ = ["build_query_engine", "open_runtime"]
