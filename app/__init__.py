"""docsrag: question answering with citations over a folder of technical documentation.

``from app import build_query_engine, open_runtime`` loads LlamaIndex on first use, not on ``import app``: the CLI's
``--help``, ``config``, ``usage`` and ``gaps`` never need it.
"""

import os

# gRPC's C core (under pymilvus) prints its own log lines, such as keepalive GOAWAY "too_many_pings" notices,
# straight to stderr; failures still reach the user as exceptions. GRPC_VERBOSITY set by the user wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

__all__ = ["build_query_engine", "open_runtime"]


def __getattr__(name: str):
    if name in __all__:
        from app import composition

        return getattr(composition, name)
    raise AttributeError(f"module 'app' has no attribute {name!r}")
