"""docsrag: question answering with citations over a folder of technical documentation."""

import os

# gRPC's C core (under pymilvus) prints its own log lines, such as keepalive GOAWAY "too_many_pings" notices,
# straight to stderr; failures still reach the user as exceptions. GRPC_VERBOSITY set by the user wins.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

from app.composition import build_query_engine, open_runtime

__all__ = ["build_query_engine", "open_runtime"]
