"""The offline second ranking stage: whole-passage meaning arbitrates when the dense and BM25 searches disagree."""

from __future__ import annotations

from pathlib import Path

from app.composition import build_retriever
from integrations.meaning_rerank import MeaningRerank, passage_chunk_ids
from tests.test_ingestion import write

QUESTION = "Why does my web app forget the logged-in user on every request to the subdomain?"
RIGHT = """# Sessions across subdomains

A browser only sends a cookie back to the host that set it. To share the session of a signed-in person between
www.example.com and shop.example.com, set SESSION_COOKIE_DOMAIN to ".example.com"; otherwise each subdomain starts
an anonymous session.
"""
# Shares the question's words (web, app, request, user, logged, every) but is about something else.
TRAP = """# Request logging

The web app logs every request. Each logged request records the user agent, the logged-in user name, the web app
version and the time the request took, so every request of every user can be found in the log again.
"""


def test_a_passage_id_names_the_chunks_it_may_hold_in_file_order() -> None:
    f = "0123456789abcdef0123"
    assert passage_chunk_ids(f"{f}#3:4", 8) == [f"{f}#3:4"]
    assert passage_chunk_ids(f"{f}#3:2..{f}#3:5", 8) == [f"{f}#3:{k}" for k in (2, 3, 4, 5)]
    assert passage_chunk_ids(f"{f}#1:0..{f}#2:1", 3) == [f"{f}#1:0", f"{f}#1:1", f"{f}#1:2", f"{f}#2:0", f"{f}#2:1"]
    assert passage_chunk_ids("no chunk id", 8) == ["no chunk id"]


def test_meaning_lifts_the_right_passage_over_a_keyword_match_and_keeps_an_order_both_searches_agree_on(
    ingestor, runtime, tmp_path: Path
) -> None:
    docs = tmp_path / "docs"
    write(docs / "sessions.md", RIGHT)
    write(docs / "logging.md", TRAP)
    ingestor.ingest(docs)
    keywords_only = build_retriever(runtime, top_k=5).retriever  # the hybrid retriever itself, to set its weights
    keywords_only.dense_weight = 0.0  # a ranking by BM25 alone: no passage is found by both searches
    nodes = keywords_only.retrieve(QUESTION)
    assert nodes[0].node.metadata["source"] == "logging.md", "the keyword match leads the BM25 ranking"

    stage = MeaningRerank(runtime.store, runtime.embed_model, top_n=1, weight=2.0)
    reranked = stage.postprocess_nodes(nodes, query_str=QUESTION)
    assert [n.node.metadata["source"] for n in reranked] == ["sessions.md"]

    hybrid = build_retriever(runtime, top_k=5).retrieve("set SESSION_COOKIE_DOMAIN to share the session between subdomains")
    top = hybrid[0].node
    assert top.metadata["dense_score"] is not None and top.metadata["bm25_score"] is not None
    kept = MeaningRerank(runtime.store, runtime.embed_model, top_n=5, weight=100.0).postprocess_nodes(hybrid, query_str="x")
    assert [n.node.node_id for n in kept] == [n.node.node_id for n in hybrid], "both searches found the first passage: the order stands"
