"""Dense + BM25 retrieval from one Milvus collection, fused with weighted RRF, then grown to whole sections.

A pipeline of small steps, each tested on its own: search (adapters.milvus_store), :func:`fuse`, :func:`absent_names`,
:func:`grown_contexts` and :func:`distinct_passages`; docs/architecture.md shows them, docs/design-notes.md says why."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import BaseNode, NodeWithScore, QueryBundle, TextNode

from integrations.adapters.milvus_store import DENSE_FIELD, SPARSE_FIELD, Hit, MilvusStore, hit_node
from integrations.backend_errors import describe_failure, transient_errors
from integrations.keyword_text import KEYWORD_FIELD, keyword_text
from integrations.named_terms import named_terms
from integrations.near_duplicates import DUPLICATES_KEY, already_shown, location, shingles
from integrations.node_ids import chunk_id, parse_chunk_id
from integrations.question_context import current_question
from integrations.section_context import CONTEXT_KEY, CONTEXT_WORDS, SECTIONS_KEY, enclosing_section, join_texts, parse_span, words

logger = logging.getLogger(__name__)

SCORE_KEYS = ["dense_score", "bm25_score"]
#: Chunks fetched of each piece in a context span (a piece within CONTEXT_WORDS has fewer unless it is mostly symbols).
SPAN_CHUNKS = 8
#: Chunks fetched on each side of a hit for its window.
WINDOW_CHUNKS = 6
#: Heading lines: Markdown ATX headings and reST/setext underlines.
_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}(?:\s.*)?$|^\s*([=\-~^*#+`])\1{2,}\s*$", re.MULTILINE)
#: Hits (in fused order) whose context is fetched; later hits are used as they are.
EXPANDED_HITS_PER_RESULT = 3


def bare_heading(text: str) -> bool:
    """Nothing but heading lines: a section whose content sits in its subsections (or nowhere)."""
    return not _HEADING_LINE.sub("", text).strip()


@dataclass
class Candidates:
    """Chunks found by any of a question's searches: node, fused score and best dense/BM25 score by id."""

    nodes: dict[str, Any] = field(default_factory=dict)
    fused: dict[str, float] = field(default_factory=dict)
    scores: dict[str, dict[str, float]] = field(default_factory=lambda: {key: {} for key in SCORE_KEYS})

    def add(self, node_id: str, key: str, score: float) -> None:
        self.scores[key][node_id] = max(score, self.scores[key].get(node_id, score))


def section_span(piece: int, node: Any) -> range | None:
    """The pieces of the hit's section context recorded at ingestion, None when it is shown as a window."""
    span = parse_span(node.metadata.get(CONTEXT_KEY))
    return span if span is not None and piece in span else None


def context_candidates(node_id: str, node: Any) -> list[str]:
    """Ids of the chunks a hit's context may take: every chunk of its section span, else its piece's chunks around it."""
    ref = parse_chunk_id(node_id)
    if ref is None:
        return []
    source, piece, index = ref
    span = section_span(piece, node)
    if span is not None:
        return [chunk_id(source, p, k) for p in span for k in range(SPAN_CHUNKS)]
    return [chunk_id(source, piece, k) for k in range(max(0, index - WINDOW_CHUNKS), index + WINDOW_CHUNKS + 1)]


def context_ids(node_id: str, node: Any, texts: dict[str, str], budget: int) -> list[str]:
    """The chunks, in file order, that make up a hit's context, among the chunks whose texts are known."""
    ref = parse_chunk_id(node_id)
    if ref is None:
        return [node_id]
    source, piece, index = ref
    if section_span(piece, node) is not None:
        members = [i for i in context_candidates(node_id, node) if i in texts]
        if node_id in members:  # else the hit lies past the chunks fetched per piece: shown as a window
            return members
    low = high = index  # a window: neighbours alternately after and before, within the budget
    total = words(texts.get(node_id, ""))
    grown = True
    while grown:
        grown = False
        for k in (high + 1, low - 1):
            text = texts.get(chunk_id(source, piece, k)) if k >= 0 else None
            if text is not None and total + words(text) <= budget:
                total += words(text)
                low, high = min(low, k), max(high, k)
                grown = True
    return [chunk_id(source, piece, k) for k in range(low, high + 1)]


def fuse(rankings: Iterable[tuple[float, str, list[Hit]]], rrf_k: int, pool: Candidates) -> list[str]:
    """Chunk ids best first by weighted RRF of ``(weight, score key, hits)`` rankings; the pool gets each chunk's node,
    fused score and best score per key."""
    for weight, key, hits in rankings:
        for rank, (node_id, score, entity) in enumerate(hits, start=1):
            pool.fused[node_id] = pool.fused.get(node_id, 0.0) + weight / (rrf_k + rank)
            if node_id not in pool.nodes:
                pool.nodes[node_id] = hit_node(entity)
            pool.add(node_id, key, abs(score))  # Milvus Lite reports BM25 scores negated
    return sorted(pool.fused, key=pool.fused.__getitem__, reverse=True)


def absent_names(names: list[str], pool: Candidates, probe: Callable[[list[str]], list[list[Hit]]]) -> list[str]:
    """The names no chunk contains: those in no candidate's keywords are looked up by ``probe`` (one BM25 request)."""
    seen = {term for node in pool.nodes.values() for term in str(node.metadata.get(KEYWORD_FIELD, "")).split()}
    unseen = [name for name in names if not seen.intersection(keyword_text(name).split())]
    found = probe([keyword_text(name) for name in unseen]) if unseen else []
    return [name for name, hits in zip(unseen, found, strict=True) if not hits]


def grown_contexts(
    ranked: list[str], pool: Candidates, fetch: Callable[[list[str]], dict[str, tuple[str, str]]], top_k: int, budget: int
) -> Iterator[tuple[str, list[str], BaseNode]]:
    """Each hit grown to its context, best first, as (hit id, chunk ids, node); contexts already shown and bare headings
    are skipped. Lazy: the next ``top_k`` hits' contexts are fetched in one request when the reader gets to them."""
    texts = {node_id: node.get_content() for node_id, node in pool.nodes.items()}
    sections = {node_id: str(node.metadata.get("section") or "") for node_id, node in pool.nodes.items()}
    expandable = ranked[: top_k * EXPANDED_HITS_PER_RESULT]
    fetched_until = 0
    shown: set[str] = set()
    for position, node_id in enumerate(ranked):
        node = pool.nodes[node_id]
        if position < len(expandable):
            if position >= fetched_until:
                fetched_until = position + top_k
                wanted = {i for hit in expandable[position:fetched_until] for i in context_candidates(hit, pool.nodes[hit])}
                for chunk_id_, (text, section) in fetch(sorted(wanted - texts.keys())).items():
                    texts[chunk_id_], sections[chunk_id_] = text, section
            ids = context_ids(node_id, node, texts, budget)
        else:
            ids = [node_id]
        if shown.issuperset(ids):
            continue
        shown.update(ids)
        if len(ids) > 1:
            node = MilvusHybridRetriever._merged(node, ids, texts, [sections[i] for i in ids])
        elif bare_heading(node.get_content()):
            continue  # says nothing; its section's content is in other chunks
        yield node_id, ids, node


def distinct_passages(contexts: Iterable[tuple[str, list[str], BaseNode]]) -> Iterator[tuple[str, list[str], BaseNode]]:
    """The contexts whose text no earlier one already shows; a later twin (the same text from another file) adds its
    location to the earlier node's ``DUPLICATES_KEY`` list instead."""
    kept: list[tuple[frozenset, BaseNode]] = []  # each passage's trigrams
    for node_id, ids, node in contexts:
        trigrams = shingles(node.get_content())
        twin = next((earlier for seen, earlier in kept if already_shown(trigrams, seen)), None)
        if twin is not None:
            places = twin.metadata.setdefault(DUPLICATES_KEY, [])
            if location(node.metadata) not in [location(twin.metadata), *places]:
                places.append(location(node.metadata))
            continue
        kept.append((trigrams, node))
        yield node_id, ids, node


class MilvusHybridRetriever(BaseRetriever):
    """Retrieve chunks by dense similarity and BM25, fused by weighted RRF, each grown to its section.

    Nodes carry ``dense_score`` (None when only BM25 found them) and ``bm25_score``; facts about the whole question go
    to the question context. ``context_words=0`` returns the bare chunks.
    """

    def __init__(
        self,
        store: MilvusStore,
        embed_model: BaseEmbedding,
        top_k: int = 5,
        dense_top_k: int = 50,
        sparse_top_k: int = 50,
        rrf_k: int = 10,
        dense_weight: float = 0.5,
        sparse_weight: float = 1.0,
        file_ids: list[str] | None = None,
        context_words: int = CONTEXT_WORDS,
        **kwargs: Any,
    ) -> None:
        self.store = store
        self._embed_model = embed_model
        self.top_k = top_k
        self.dense_top_k = dense_top_k
        self.sparse_top_k = sparse_top_k
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.sparse_weight = sparse_weight
        self.file_ids = file_ids
        self.context_words = context_words
        super().__init__(**kwargs)

    def _search(self, queries: list[Any], field: str, metric: str, limit: int) -> list[list[Hit]]:
        return self.store.search(queries, field, metric, limit, self.file_ids)

    def _query_vector(self, question: str, given: list[float] | None) -> list[float] | None:
        """The question's vector, or None when the embedder fails (API down, budget cap): BM25 still answers."""
        if self.dense_weight <= 0:
            return None
        try:
            return given if given is not None else self._embed_model.get_query_embedding(question)
        except transient_errors() as exc:
            notice = f"The question could not be embedded ({describe_failure(exc)}): searched by keywords (BM25) only."
            current_question().notice(notice)
            logger.warning("%s", notice)
            return None

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        question = query_bundle.query_str
        pool = Candidates()
        ranked = self._rank(question, self._query_vector(question, query_bundle.embedding), pool)
        context = current_question()
        names = named_terms(question) if self.sparse_weight > 0 else []
        context.missing_names = absent_names(names, pool, lambda queries: self._search(queries, SPARSE_FIELD, "BM25", 1))
        context.dense_score = max(pool.scores["dense_score"].values(), default=None)
        if self.context_words <= 0:
            return [self._result(pool.nodes[i], [i], pool.fused[i], pool) for i in ranked[: self.top_k]]
        contexts = distinct_passages(grown_contexts(ranked, pool, self.store.chunks, self.top_k, self.context_words))
        results = []
        for node_id, ids, node in islice(contexts, self.top_k):
            result = self._result(node, ids, pool.fused[node_id], pool)
            for keys in (result.node.excluded_llm_metadata_keys, result.node.excluded_embed_metadata_keys):
                keys.extend([DUPLICATES_KEY] if DUPLICATES_KEY not in keys else [])
            results.append(result)
        return results

    def _rank(self, question: str, vector: list[float] | None, pool: Candidates) -> list[str]:
        """Chunk ids best first by weighted RRF of the dense and the BM25 ranking (one Milvus request each)."""
        dense = self._search([vector], DENSE_FIELD, "IP", self.dense_top_k)[0] if vector is not None else []
        sparse_limit = self.sparse_top_k if self.sparse_weight > 0 else 0
        sparse = self._search([keyword_text(question) or question], SPARSE_FIELD, "BM25", sparse_limit)[0]
        return fuse([(self.dense_weight, "dense_score", dense), (self.sparse_weight, "bm25_score", sparse)], self.rrf_k, pool)

    @staticmethod
    def _merged(hit: Any, ids: list[str], texts: dict[str, str], sections: list[str]) -> TextNode:
        """One node for a context of several chunks, labelled with the section that holds them all."""
        pieces = [parse_chunk_id(i)[:2] for i in ids]  # type: ignore[index]
        metadata = dict(hit.metadata)
        paths = list(dict.fromkeys(s or metadata.get("section") or "" for s in sections))
        if len(paths) > 1:  # the sections it spans, for the answer step to label a quote with its own
            metadata["section"], metadata[SECTIONS_KEY] = enclosing_section(paths), paths
        return TextNode(
            id_=f"{ids[0]}..{ids[-1]}",
            text=join_texts([texts[i] for i in ids], [i > 0 and pieces[i] == pieces[i - 1] for i in range(len(ids))]),
            metadata=metadata,
            excluded_embed_metadata_keys=[*hit.excluded_embed_metadata_keys, SECTIONS_KEY],
            excluded_llm_metadata_keys=[*hit.excluded_llm_metadata_keys, SECTIONS_KEY],
            relationships=dict(hit.relationships),
        )

    @staticmethod
    def _result(node: Any, ids: list[str], score: float, pool: Candidates) -> NodeWithScore:
        node.metadata.pop(KEYWORD_FIELD, None)
        for key, by_id in pool.scores.items():
            known = [by_id[i] for i in ids if i in by_id]
            node.metadata[key] = max(known) if known else None
        for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
            keys.extend(k for k in SCORE_KEYS if k not in keys)
        return NodeWithScore(node=node, score=score)
