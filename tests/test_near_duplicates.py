"""Results are k distinct passages: the same text in two files is one result that lists both places."""

from __future__ import annotations

from pathlib import Path

from app.composition import build_retriever
from integrations.near_duplicates import DUPLICATES_KEY, already_shown, shingles
from tests.test_ingestion import write

PAGE = """# Sessions

## Cookie domain

If the admin login form shows again without an error, the login cookie is not being set: the domain of the cookie
Django sends does not match the domain in the browser. Set SESSION_COOKIE_DOMAIN to match your domain.
"""
OTHER = """# Caching

## Cache backends

Memcached, the database and the local-memory cache are the cache backends. Choose one with the CACHES setting.
"""


def test_a_passage_repeating_an_earlier_result_is_hidden_but_a_longer_one_containing_it_is_not() -> None:
    sentence = shingles("Set SESSION_COOKIE_DOMAIN to match your domain.")
    section = shingles(PAGE)
    assert already_shown(sentence, section), "the sentence is already shown by the section"
    assert not already_shown(section, sentence), "the section says more than the sentence shown before it"
    assert not already_shown(shingles(OTHER), section)
    assert not already_shown(frozenset(), section)


def test_the_same_text_in_an_html_page_and_its_source_is_one_result_listing_both(ingestor, runtime, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "topics" / "sessions.md", PAGE)
    write(docs / "_sources" / "topics" / "sessions.md", PAGE)
    write(docs / "topics" / "cache.md", OTHER)
    ingestor.ingest(docs)
    nodes = build_retriever(runtime, top_k=3).retrieve("admin login form shows again, cookie domain")
    texts = [n.node.get_content() for n in nodes]
    assert sum("SESSION_COOKIE_DOMAIN" in t for t in texts) == 1, texts
    top = nodes[0].node
    places = {top.metadata["source"], *(place["source"] for place in top.metadata[DUPLICATES_KEY])}
    assert places == {"topics/sessions.md", "_sources/topics/sessions.md"}
    assert DUPLICATES_KEY not in top.get_content(metadata_mode="llm"), "locations are bookkeeping, not shown to the LLM"
