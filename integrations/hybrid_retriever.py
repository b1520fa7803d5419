"""Dense + BM25 retrieval from one Milvus collection, fused with weighted RRF, then grown to whole sections.

Milvus computes both rankings (the dense vector index and its built-in BM25
function), so the same retriever serves Milvus Lite and a Milvus cluster. The
fusion happens here rather than in Milvus' RRFRanker so that each result keeps
its dense cosine similarity, which the answer step uses to detect weak evidence.
Only the whole question is embedded; the dense search and the BM25 search of the
question and its parts are one Milvus request each.

Each hit grows into its context (integrations.section_context): the section
span recorded at ingestion, else a window of its piece's chunks, fetched by
primary key. Hits whose context is already shown are skipped, so the top k are
k distinct passages.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from integrations import node_ids
from integrations.backend_errors import describe_failure, transient_errors
from integrations.keyword_text import KEYWORD_FIELD, QUESTION_WORDS, keyword_text
from integrations.named_terms import named_terms
from integrations.node_ids import chunk_id, parse_chunk_id
from integrations.question_context import current_question
from integrations.section_context import CONTEXT_KEY, CONTEXT_WORDS, join_texts, parse_span, words

logger = logging.getLogger(__name__)

DENSE_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
NODE_FIELDS = ["_node_content", "_node_type", "text"]
SCORE_KEYS = ["dense_score", "bm25_score"]
#: Chunks fetched of each piece in a context span (a piece within CONTEXT_WORDS has fewer unless it is mostly symbols).
SPAN_CHUNKS = 8
#: Chunks fetched on each side of a hit for its window.
WINDOW_CHUNKS = 6
#: Heading lines: Markdown ATX headings and reST/setext underlines.
_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}(?:\s.*)?$|^\s*([=\-~^*#+`])\1{2,}\s*$", re.MULTILINE)
#: Where a question may turn to another topic: sentence ends, "and then", ", and how ...", "Also,", "Meanwhile," ...
_CLAUSE_BREAK = re.compile(
    r"(?<=[?.;])\s+|,?\s+and then\s+|,?\s+and (?=how|what|which|where|when|why|to|can|is|are|do|does)\b"
    r"|,\s*(?:also|then|meanwhile|additionally|and)\b,?\s*|\b(?:also|meanwhile|additionally|furthermore|then),\s*",
    re.IGNORECASE,
)
#: Between the items of an enumeration within a clause: "a, b and c", "a as well as b".
_ITEM_BREAK = re.compile(r",\s*|;\s*|\s+and\s+|\s+as well as\s+", re.IGNORECASE)
#: Hits (in fused order) whose context is fetched; later hits are used as they are.
EXPANDED_HITS_PER_RESULT = 3
#: The first results hold at most one passage per heading section (or PDF page); its other passages follow them.
DISTINCT_SECTION_RESULTS = 5


def bare_heading(text: str) -> bool:
    """Nothing but heading lines: a section whose content sits in its subsections (or nowhere)."""
    return not _HEADING_LINE.sub("", text).strip()


def topical(text: str, min_terms: int) -> bool:
    """The text names a topic: at least ``min_terms`` words that are not question phrasing."""
    return sum(w not in QUESTION_WORDS for w in re.findall(r"\w+", text.lower())) >= min_terms


def question_parts(question: str, min_terms: int = 3, most: int = 5) -> list[str]:
    """The clauses of a multi-part question that each name a topic ([] for a one-part question).

    "How do I add rings, and how do I check them?" asks two things; the second
    is easily crowded out of the top results by the first, so each part is
    searched too. So is each item of an enumeration within a clause ("insert filler
    cells, analyze the clock tree and remove the buffers") when every item names a
    topic itself. Clauses of question phrasing only ("How can I achieve this?") are dropped.
    """
    parts: list[str] = []
    for clause in (p.strip(" ,.?") for p in _CLAUSE_BREAK.split(question) if p):
        items = [i for i in (p.strip(" ,.?") for p in _ITEM_BREAK.split(clause) if p) if topical(i, min_terms)]
        if len(items) > 1:
            parts.extend(items)
        elif topical(clause, min_terms):
            parts.append(clause)
    return parts[:most] if len(parts) > 1 else []


def interleave(main: list[str], parts: Sequence[list[str]]) -> list[str]:
    """The whole question's best hit, then each part's best, then the rest of the whole question's ranking."""
    ordered = main[:1] + [ranking[0] for ranking in parts if ranking] + main[1:] + [i for ranking in parts for i in ranking[1:]]
    return list(dict.fromkeys(ordered))


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


class MilvusHybridRetriever(BaseRetriever):
    """Retrieve chunks by dense similarity and BM25, fused by weighted RRF, each grown to its section.

    Each returned node carries ``dense_score`` (best cosine among its chunks, or
    None when only BM25 found it) and ``bm25_score`` in its metadata, hidden from
    the LLM and embedder. Facts about the whole question (its best cosine over the
    index, the names in it that no chunk contains, why it was searched by keywords
    only) go to the question context (integrations.question_context).
    ``context_words=0`` returns the bare chunks; ``split_questions`` also searches
    each part of a multi-part question.
    """

    def __init__(
        self,
        vector_store: Any,
        embed_model: BaseEmbedding,
        top_k: int = 5,
        dense_top_k: int = 20,
        sparse_top_k: int = 20,
        rrf_k: int = 10,
        dense_weight: float = 0.5,
        sparse_weight: float = 1.0,
        file_ids: list[str] | None = None,
        context_words: int = CONTEXT_WORDS,
        split_questions: bool = True,
        **kwargs: Any,
    ) -> None:
        self._store = vector_store
        self._embed_model = embed_model
        self.top_k = top_k
        self.dense_top_k = dense_top_k
        self.sparse_top_k = sparse_top_k
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.sparse_weight = sparse_weight
        self.file_ids = file_ids
        self.context_words = context_words
        self.split_questions = split_questions
        super().__init__(**kwargs)

    def _search(self, queries: list[Any], field: str, metric: str, limit: int) -> list[list[tuple[str, float, dict]]]:
        """One Milvus request for all queries: per query, its hits as (id, score, raw hit), within ``file_ids`` if set."""
        if limit <= 0 or not queries:
            return [[] for _ in queries]
        result = self._store.client.search(
            collection_name=self._store.collection_name,
            data=queries,
            anns_field=field,
            limit=limit,
            filter=node_ids.files_filter(self.file_ids) if self.file_ids is not None else "",
            output_fields=NODE_FIELDS,
            search_params={"metric_type": metric},
        )
        return [[(hit["id"], float(hit["distance"]), hit) for hit in hits] for hits in result]

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
        texts = [question, *(question_parts(question) if self.split_questions else [])]
        pool = Candidates()
        whole, *parts = self._rank(texts, self._query_vector(question, query_bundle.embedding), pool)
        context = current_question()
        context.missing_names = self._absent(named_terms(question) if self.sparse_weight > 0 else [], pool)
        context.dense_score = max(pool.scores["dense_score"].values(), default=None)
        ranked = interleave(whole, parts)
        if self.context_words <= 0:
            return [self._result(pool.nodes[i], [i], pool.fused[i], pool) for i in ranked[: self.top_k]]
        return self._grow(ranked, pool)

    def _rank(self, texts: list[str], vector: list[float] | None, pool: Candidates) -> list[list[str]]:
        """Per query text, chunk ids best first by weighted RRF of its rankings: dense (whole question) and BM25 (each text).

        Two Milvus requests in all. The parts are searched by keywords only: embedding them too costs as much as the rest
        of retrieval together, for no steady gain in recall.
        """
        dense = self._search([vector], DENSE_FIELD, "IP", self.dense_top_k) if vector is not None else []
        dense += [[] for _ in range(len(texts) - len(dense))]
        terms = [keyword_text(t) or t for t in texts]
        sparse = self._search(terms, SPARSE_FIELD, "BM25", self.sparse_top_k if self.sparse_weight > 0 else 0)
        rankings = []
        for dense_hits, sparse_hits in zip(dense, sparse, strict=True):
            fused: dict[str, float] = {}
            for weight, hits, key in ((self.dense_weight, dense_hits, "dense_score"), (self.sparse_weight, sparse_hits, "bm25_score")):
                for rank, (node_id, score, hit) in enumerate(hits, start=1):
                    fused[node_id] = fused.get(node_id, 0.0) + weight / (self.rrf_k + rank)
                    if node_id not in pool.nodes:
                        pool.nodes[node_id] = self._store._parse_from_milvus_results([[hit]])[0][0]
                    pool.add(node_id, key, abs(score))  # Milvus Lite reports BM25 scores negated
            ranked = sorted(fused, key=fused.__getitem__, reverse=True)
            for node_id in ranked:
                pool.fused.setdefault(node_id, fused[node_id])  # the whole question's ranking comes first
            rankings.append(ranked)
        return rankings

    def _absent(self, names: list[str], pool: Candidates) -> list[str]:
        """The names no chunk contains: those in no candidate's keywords are looked up by one more BM25 request.

        Most names of an answerable question are in its candidates, so the request is rarely needed.
        """
        seen = {term for node in pool.nodes.values() for term in str(node.metadata.get(KEYWORD_FIELD, "")).split()}
        unseen = [name for name in names if not seen.intersection(keyword_text(name).split())]
        found = self._search([keyword_text(name) for name in unseen], SPARSE_FIELD, "BM25", 1) if unseen else []
        return [name for name, hits in zip(unseen, found, strict=True) if not hits]

    def _grow(self, ranked: list[str], pool: Candidates) -> list[NodeWithScore]:
        """The top k distinct contexts, in the order of their best chunk."""
        texts = {node_id: node.get_content() for node_id, node in pool.nodes.items()}
        expandable = ranked[: self.top_k * EXPANDED_HITS_PER_RESULT]
        fetched_until = 0
        results: list[NodeWithScore] = []
        repeats: list[NodeWithScore] = []  # passages of a section already among the first results
        sections: set[tuple[Any, ...]] = set()
        shown: set[str] = set()
        for position, node_id in enumerate(ranked):
            node = pool.nodes[node_id]
            if position < len(expandable):
                if position >= fetched_until:  # the next top_k hits' contexts, in one request
                    fetched_until = position + self.top_k
                    wanted = {i for hit in expandable[position:fetched_until] for i in context_candidates(hit, pool.nodes[hit])}
                    texts.update(self._fetch_texts(sorted(wanted - texts.keys())))
                ids = context_ids(node_id, node, texts, self.context_words)
            else:
                ids = [node_id]
            if shown.issuperset(ids):
                continue
            shown.update(ids)
            if len(ids) > 1:
                node = self._merged(node, ids, texts)
            elif bare_heading(node.get_content()):
                continue  # says nothing; its section's content is in other chunks
            meta = node.metadata
            section = (meta.get("source"), meta.get("section"), meta.get("page")) if meta.get("section") or meta.get("page") else None
            if section is not None and len(results) < DISTINCT_SECTION_RESULTS and section in sections:
                repeats.append(self._result(node, ids, pool.fused[node_id], pool))
                continue
            sections.add(section)
            results.append(self._result(node, ids, pool.fused[node_id], pool))
            if len(results) == DISTINCT_SECTION_RESULTS:
                results += repeats
                repeats = []
            if len(results) >= self.top_k:
                break
        return (results + repeats)[: self.top_k]

    def _fetch_texts(self, ids: list[str]) -> dict[str, str]:
        """Texts of these chunks by primary key (absent ids are chunks that do not exist)."""
        if not ids:
            return {}
        rows = self._store.client.get(collection_name=self._store.collection_name, ids=ids, output_fields=["text"])
        return {row["id"]: str(row.get("text") or "") for row in rows}

    @staticmethod
    def _merged(hit: Any, ids: list[str], texts: dict[str, str]) -> TextNode:
        """One node for a context of several chunks; it keeps the hit's metadata, so it is labelled with the hit's section."""
        pieces = [parse_chunk_id(i)[:2] for i in ids]  # type: ignore[index]
        return TextNode(
            id_=f"{ids[0]}..{ids[-1]}",
            text=join_texts([texts[i] for i in ids], [i > 0 and pieces[i] == pieces[i - 1] for i in range(len(ids))]),
            metadata=dict(hit.metadata),
            excluded_embed_metadata_keys=list(hit.excluded_embed_metadata_keys),
            excluded_llm_metadata_keys=list(hit.excluded_llm_metadata_keys),
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
