"""Each step of the hybrid retriever on its own: the Milvus adapter, fusion, the missing-name probe, section growth and
near-duplicate collapse (integrations/hybrid_retriever.py, integrations/adapters/milvus_store.py)."""

from __future__ import annotations

from pathlib import Path

from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQuery
from llama_index.core.vector_stores.utils import node_to_metadata_dict

from integrations.adapters.milvus_store import DENSE_FIELD, SPARSE_FIELD, Hit, hit_node
from integrations.hybrid_retriever import Candidates, absent_names, distinct_passages, fuse, grown_contexts
from integrations.keyword_text import KEYWORD_FIELD, keyword_text
from integrations.near_duplicates import DUPLICATES_KEY
from integrations.node_ids import chunk_id, file_id, parse_chunk_id
from tests.test_ingestion import write

FILE = "0123456789abcdef0123"
OTHER = "fedcba9876543210fedc"


def _hit(node_id: str, score: float, text: str = "", **metadata) -> Hit:
    entity = node_to_metadata_dict(TextNode(id_=node_id, text=text, metadata=metadata), remove_text=False, flat_metadata=False)
    return Hit(node_id, score, {**entity, "text": text})


def test_the_adapter_rebuilds_the_nodes_the_vector_store_itself_returns(ingestor, runtime, tmp_path: Path) -> None:
    write(tmp_path / "docs" / "widgets.md", "# Widgets\n\nThe widget daemon timeout defaults to 30 seconds.\n")
    write(tmp_path / "docs" / "cache.md", "# Cache\n\nThe cache lives in /var/cache/widget and grows to 2 GB.\n")
    ingestor.ingest(tmp_path / "docs")
    store, search = runtime.store.vector_store, runtime.store
    vector = runtime.embed_model.get_query_embedding("widget daemon timeout")

    [dense] = search.search([vector], DENSE_FIELD, "IP", 5)
    stock = store.query(VectorStoreQuery(query_embedding=vector, similarity_top_k=5))
    assert [h.id for h in dense] == stock.ids
    assert [hit_node(h.entity).model_dump() for h in dense] == [n.model_dump() for n in stock.nodes], "public rebuild = store's"
    assert [round(h.score, 5) for h in dense] == [round(s, 5) for s in stock.similarities]

    bm25, cache_only = search.search([keyword_text("widget timeout"), keyword_text("zebra")], SPARSE_FIELD, "BM25", 5)
    assert bm25 and "timeout" in hit_node(bm25[0].entity).get_content() and cache_only == []
    cache = file_id(tmp_path / "docs", "cache.md")
    [filtered] = search.search([vector], DENSE_FIELD, "IP", 5, file_ids=[cache])
    assert filtered and {parse_chunk_id(h.id)[0] for h in filtered} == {cache}
    node = hit_node(dense[0].entity)
    assert search.chunks([dense[0].id, "absent#0:0"]) == {dense[0].id: (node.get_content(), node.metadata.get("section") or "")}
    assert search.search([], DENSE_FIELD, "IP", 5) == [] and search.search([vector], DENSE_FIELD, "IP", 0) == [[]]


def test_fusion_is_weighted_rrf_and_keeps_each_chunk_s_best_score() -> None:
    a, b, c = (chunk_id(FILE, 0, k) for k in range(3))
    pool = Candidates()
    dense = [_hit(a, 0.9), _hit(b, 0.5)]
    bm25 = [_hit(c, -7.0), _hit(b, -3.0)]  # Milvus Lite reports BM25 negated
    ranked = fuse([(0.5, "dense_score", dense), (1.0, "bm25_score", bm25)], 10, pool)
    assert pool.fused[b] == 0.5 / 12 + 1.0 / 12 and pool.fused[c] == 1.0 / 11 and pool.fused[a] == 0.5 / 11
    assert ranked == [b, c, a]
    assert pool.scores == {"dense_score": {a: 0.9, b: 0.5}, "bm25_score": {c: 7.0, b: 3.0}}
    assert pool.nodes[a].node_id == a


def test_the_probe_looks_up_only_names_no_candidate_contains() -> None:
    pool = Candidates(nodes={"x": TextNode(text="t", metadata={KEYWORD_FIELD: keyword_text("SESSION_COOKIE_DOMAIN is set")})})
    asked: list[list[str]] = []

    def probe(queries: list[str]) -> list[list[Hit]]:
        asked.append(queries)
        return [[] if q == keyword_text("FrobnicatorPool") else [_hit("y", 1.0)] for q in queries]

    names = ["SESSION_COOKIE_DOMAIN", "FrobnicatorPool", "CACHES"]
    assert absent_names(names, pool, probe) == ["FrobnicatorPool"]
    assert asked == [[keyword_text("FrobnicatorPool"), keyword_text("CACHES")]], "one request, only for unseen names"
    assert absent_names(["SESSION_COOKIE_DOMAIN"], pool, probe) == [] and len(asked) == 1


def test_growth_joins_a_hit_s_neighbours_skips_what_is_shown_and_fetches_lazily() -> None:
    texts = {chunk_id(FILE, 0, k): f"Paragraph {k} about the widget daemon and its settings." for k in range(4)}
    texts[chunk_id(OTHER, 0, 0)] = "# Heading only"
    pool = Candidates()
    ranked = fuse([(1.0, "bm25_score", [_hit(i, 1.0, t) for i, t in texts.items() if i.endswith(":1") or i.endswith(":2")])], 10, pool)
    ranked += [i for i in fuse([(1.0, "bm25_score", [_hit(chunk_id(OTHER, 0, 0), 1.0, "# Heading only")])], 10, pool) if i not in ranked]
    fetches: list[list[str]] = []

    def fetch(ids: list[str]) -> dict[str, tuple[str, str]]:
        fetches.append(ids)
        return {i: (texts[i], "") for i in ids if i in texts}

    contexts = grown_contexts(ranked, pool, fetch, top_k=1, budget=40)
    hit, ids, node = next(contexts)
    assert hit == chunk_id(FILE, 0, 1) and ids == [chunk_id(FILE, 0, k) for k in range(4)]
    assert all(texts[i] in node.get_content() for i in ids) and len(fetches) == 1, "one request for the first hit's window"
    assert list(contexts) == [], "the second hit is inside the first context; a bare heading says nothing"
    assert len(fetches) == 3, "then one request per batch of top_k hits"


def test_a_passage_an_earlier_one_already_shows_is_collapsed_into_its_locations() -> None:
    text = "Set SESSION_COOKIE_DOMAIN to match the domain the browser shows for the admin site."
    first = TextNode(id_="a", text=text, metadata={"source": "topics/sessions.md", "section": "Cookies"})
    twin = TextNode(id_="b", text=text, metadata={"source": "_sources/topics/sessions.md", "section": "Cookies"})
    other = TextNode(id_="c", text="Memcached and the database are cache backends.", metadata={"source": "cache.md"})
    kept = list(distinct_passages([("a", ["a"], first), ("b", ["b"], twin), ("c", ["c"], other)]))
    assert [node_id for node_id, _, _ in kept] == ["a", "c"]
    assert first.metadata[DUPLICATES_KEY] == [{"source": "_sources/topics/sessions.md", "section": "Cookies"}]
