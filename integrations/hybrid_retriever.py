"""Dense + BM25 retrieval from one Milvus collection, fused with weighted RRF, then grown to whole sections.

Milvus computes both rankings (the dense vector index and its built-in BM25
function), so the same retriever serves Milvus Lite and a Milvus cluster. The
fusion happens here rather than in Milvus' RRFRanker so that each result keeps
its dense cosine similarity, which the answer step uses to detect weak evidence.

Chunks are small so that each embeds well, but a chunk is often only part of
what answers a question (a command's description without its options table).
So each hit grows into its *context*: the largest enclosing heading section
that fits in ``context_words`` (Markdown/HTML/reST pieces are sections), else a
window of neighbouring chunks of the same piece (a PDF page, a long section).
Hits whose context is already shown are skipped, so the top k are k distinct
passages.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from integrations.backend_errors import describe_failure, transient_errors
from integrations.keyword_text import KEYWORD_FIELD, keyword_text

logger = logging.getLogger(__name__)

DENSE_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
NODE_FIELDS = ["_node_content", "_node_type", "text"]
SCORE_KEYS = ["dense_score", "bm25_score"]
#: Metadata key: the question's (or one of its parts') best cosine similarity over the index: evidence that the docs cover it.
QUESTION_DENSE_KEY = "question_dense_score"
SECTION_SEPARATOR = " > "
#: Chunk ids are "<piece id>:<n>" and piece ids "<source>#<n>" (app.chunking.chunk_id, app.ingestion).
_CHUNK_ID = re.compile(r"^(?P<piece>(?P<source>.*)#(?P<number>\d+)):(?P<index>\d+)$")
#: Pieces fetched on each side of a hit's piece when looking for its enclosing section.
PIECE_RADIUS = 12
#: Heading lines: Markdown ATX headings and reST/setext underlines.
_HEADING_LINE = re.compile(r"^ {0,3}#{1,6}(?:\s.*)?$|^\s*([=\-~^*#+`])\1{2,}\s*$", re.MULTILINE)
#: Where a question may turn to another topic: sentence ends, "and then", ", and how ...", "Also,", "Meanwhile," ...
_CLAUSE_BREAK = re.compile(
    r"(?<=[?.;])\s+|,?\s+and then\s+|,?\s+and (?=how|what|which|where|when|why|to|can|is|are|do|does)\b"
    r"|,\s*(?:also|then|meanwhile|additionally|and)\b,?\s*|\b(?:also|meanwhile|additionally|furthermore|then),\s*",
    re.IGNORECASE,
)
#: Words that say how a question is asked rather than what it is about.
_FRAME_WORDS = (
    "a an the and or but of to in on for with by at from as is are was were be been being do does did can could would should will "
    "shall may might must how what which where when why who whom this that these those it its they them their we our us i my me you "
    "your he she his her one user users engineer engineers developer developers designer someone achieve accomplish proceed done go "
    "about process step steps way ways use using utilize utilise there here also then after before during while so such if into "
    "need needs want wants like some any possible possibly"
)
QUESTION_FRAME = frozenset(_FRAME_WORDS.split())
#: Hits (in fused order) whose neighbourhood is fetched; later hits are used as they are.
EXPANDED_HITS_PER_RESULT = 3


def sources_filter(sources: list[str] | None) -> str:
    if not sources:
        return ""
    return f"source in [{', '.join(json.dumps(s) for s in sources)}]"


def words(text: str) -> int:
    return len(text.split())


def bare_heading(text: str) -> bool:
    """Nothing but heading lines: a section whose content sits in its subsections (or nowhere)."""
    return not _HEADING_LINE.sub("", text).strip()


def question_parts(question: str, min_terms: int = 3, most: int = 4) -> list[str]:
    """The clauses of a multi-part question that each name a topic ([] for a one-part question).

    "How do I add rings, and how do I check them?" asks two things; the second
    is easily crowded out of the top results by the first, so each part is
    searched too. Clauses of question phrasing only ("How can I achieve this?") are dropped.
    """
    parts = [p.strip(" ,.?") for p in _CLAUSE_BREAK.split(question) if p and p.strip(" ,.?")]
    topical = [p for p in parts if sum(w not in QUESTION_FRAME for w in re.findall(r"\w+", p.lower())) >= min_terms]
    return topical[:most] if len(topical) > 1 else []


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

    def add(self, node_id: str, node: Any, key: str, score: float) -> None:
        self.nodes.setdefault(node_id, node)
        self.scores[key][node_id] = max(score, self.scores[key].get(node_id, score))


@dataclass(frozen=True)
class Neighbour:
    """A chunk near a hit: where it sits in its file, its heading path and text."""

    id: str
    source: str
    piece: str
    number: int
    index: int
    section: tuple[str, ...]
    text: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Neighbour | None:
        match = _CHUNK_ID.match(str(row.get("id", "")))
        if not match:
            return None
        section = str(row.get("section") or "")
        return cls(
            id=row["id"],
            source=match["source"],
            piece=match["piece"],
            number=int(match["number"]),
            index=int(match["index"]),
            section=tuple(section.split(SECTION_SEPARATOR)) if section else (),
            text=str(row.get("text") or ""),
        )


def join_chunks(chunks: Sequence[Neighbour]) -> str:
    """Chunks in file order as one text; the overlap between neighbouring chunks of one piece appears once."""
    out = ""
    previous: Neighbour | None = None
    for chunk in chunks:
        if previous is None:
            out = chunk.text
        elif previous.piece == chunk.piece:
            shared = overlap(out, chunk.text)
            out += chunk.text[shared:] if shared else "\n" + chunk.text
        else:
            out += "\n\n" + chunk.text
        previous = chunk
    return out


def overlap(left: str, right: str, longest: int = 2000) -> int:
    """Length of the longest suffix of ``left`` that starts ``right`` (at least 20 characters, else 0)."""
    for size in range(min(len(left), len(right), longest), 19, -1):
        if left.endswith(right[:size]):
            return size
    return 0


class Neighbourhood:
    """The fetched chunks around some hits, in file order per source, and how a hit grows into its context."""

    def __init__(self, chunks: Sequence[Neighbour], requested: dict[str, set[int]]) -> None:
        self.by_source: dict[str, list[Neighbour]] = {}
        for chunk in sorted(chunks, key=lambda c: (c.source, c.number, c.index)):
            self.by_source.setdefault(chunk.source, []).append(chunk)
        self.position = {c.id: (source, i) for source, rows in self.by_source.items() for i, c in enumerate(rows)}
        # Piece numbers asked for, per source: one asked for but absent has no chunks (a bare heading) or is past the file's end.
        self.requested = requested

    def context(self, node_id: str, budget: int, paged: bool) -> list[Neighbour] | None:
        """The chunks that make up a hit's context, or None when the hit was not fetched."""
        if node_id not in self.position:
            return None
        source, i = self.position[node_id]
        rows = self.by_source[source]
        section = None if paged else self._section(rows, i, budget, self.requested.get(source, set()))
        return section or self._window(rows, i, budget)

    @staticmethod
    def _section(rows: list[Neighbour], i: int, budget: int, requested: set[int]) -> list[Neighbour] | None:
        """The largest enclosing heading section around rows[i] within the budget (None if even its own is too big).

        A section is taken only when both its ends were fetched: pieces not fetched could continue it.
        """
        path = rows[i].section
        best = None
        for depth in range(len(path), 0, -1):
            prefix = path[:depth]
            low, high = i, i
            while low > 0 and _adjacent(rows[low - 1], rows[low], requested) and rows[low - 1].section[:depth] == prefix:
                low -= 1
            while high + 1 < len(rows) and _adjacent(rows[high], rows[high + 1], requested) and rows[high + 1].section[:depth] == prefix:
                high += 1
            starts = (low > 0 and _adjacent(rows[low - 1], rows[low], requested)) or requested.issuperset(range(rows[low].number))
            ends = (high + 1 < len(rows) and _adjacent(rows[high], rows[high + 1], requested)) or rows[high].number + 1 in requested
            members = rows[low : high + 1]
            if not (starts and ends) or sum(words(c.text) for c in members) > budget:
                break
            best = members
        return best

    @staticmethod
    def _window(rows: list[Neighbour], i: int, budget: int) -> list[Neighbour]:
        """rows[i] and its neighbours in the same piece, alternately after and before, within the budget."""
        low = high = i
        total = words(rows[i].text)
        grown = True
        while grown:
            grown = False
            for j in (high + 1, low - 1):
                if 0 <= j < len(rows) and rows[j].piece == rows[i].piece and total + words(rows[j].text) <= budget:
                    total += words(rows[j].text)
                    low, high = min(low, j), max(high, j)
                    grown = True
        return rows[low : high + 1]


def _adjacent(before: Neighbour, after: Neighbour, requested: set[int]) -> bool:
    """Consecutive in the file: nothing unfetched between them (pieces asked for but absent have no chunks)."""
    return requested.issuperset(range(before.number + 1, after.number))


class MilvusHybridRetriever(BaseRetriever):
    """Retrieve chunks by dense similarity and BM25, fused by weighted RRF, each grown to its section.

    Each returned node carries ``dense_score`` (best cosine among its chunks, or
    None when only BM25 found it), ``bm25_score`` and ``question_dense_score``
    (the question's best cosine over the index) in its metadata, hidden from
    the LLM and embedder. ``context_words=0`` returns the bare chunks;
    ``split_questions`` also searches each part of a multi-part question.
    """

    def __init__(
        self,
        vector_store: Any,
        embed_model: BaseEmbedding,
        top_k: int = 5,
        dense_top_k: int = 20,
        sparse_top_k: int = 20,
        rrf_k: int = 60,
        dense_weight: float = 1.0,
        sparse_weight: float = 1.0,
        sources: list[str] | None = None,
        context_words: int = 250,
        split_questions: bool = True,
        **kwargs: Any,
    ) -> None:
        self._store = vector_store
        self._embed_model = embed_model
        self._local = threading.local()
        self.top_k = top_k
        self.dense_top_k = dense_top_k
        self.sparse_top_k = sparse_top_k
        self.rrf_k = rrf_k
        self.dense_weight = dense_weight
        self.sparse_weight = sparse_weight
        self.sources = sources
        self.context_words = context_words
        self.split_questions = split_questions
        super().__init__(**kwargs)

    def _search(self, data: Any, field: str, metric: str, limit: int, expr: str) -> list[tuple[Any, float, str]]:
        if limit <= 0:
            return []
        result = self._store.client.search(
            collection_name=self._store.collection_name,
            data=[data],
            anns_field=field,
            limit=limit,
            filter=expr,
            output_fields=NODE_FIELDS,
            search_params={"metric_type": metric},
        )
        nodes, scores, ids = self._store._parse_from_milvus_results(result)
        return list(zip(nodes, scores, ids, strict=True))

    @property
    def last_notice(self) -> str | None:
        """Why the last question in this thread was searched by keywords only (None when dense search worked)."""
        return getattr(self._local, "notice", None)

    def _query_embedding(self, text: str) -> list[float] | None:
        """The question's vector, or None when the embedder fails (API down, budget cap): BM25 still answers."""
        try:
            return self._embed_model.get_query_embedding(text)
        except transient_errors() as exc:
            self._local.notice = f"The question could not be embedded ({describe_failure(exc)}): searched by keywords (BM25) only."
            logger.warning("%s", self._local.notice)
            return None

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self._local.notice = None
        expr = sources_filter(self.sources)
        pool = Candidates()
        ranked = self._rank(query_bundle.query_str, query_bundle.embedding, expr, pool)
        if self.split_questions:
            parts = [self._rank(part, None, expr, pool) for part in question_parts(query_bundle.query_str)]
            ranked = interleave(ranked, parts)
        if self.context_words <= 0:
            return [self._result(pool.nodes[i], [i], pool.fused[i], pool) for i in ranked[: self.top_k]]
        return self._grow(ranked, pool)

    def _rank(self, text: str, embedding: list[float] | None, expr: str, pool: Candidates) -> list[str]:
        """Chunk ids for one query text, best first by weighted RRF of its dense and BM25 rankings."""
        dense: list[tuple[Any, float, str]] = []
        vector = (embedding or self._query_embedding(text)) if self.dense_weight > 0 else None
        if vector is not None:
            dense = self._search(vector, DENSE_FIELD, "IP", self.dense_top_k, expr)
        terms = keyword_text(text) or text
        sparse = self._search(terms, SPARSE_FIELD, "BM25", self.sparse_top_k if self.sparse_weight > 0 else 0, expr)
        fused: dict[str, float] = {}
        for weight, hits, key in ((self.dense_weight, dense, "dense_score"), (self.sparse_weight, sparse, "bm25_score")):
            for rank, (node, score, node_id) in enumerate(hits, start=1):
                fused[node_id] = fused.get(node_id, 0.0) + weight / (self.rrf_k + rank)
                pool.add(node_id, node, key, abs(float(score)))  # Milvus Lite reports BM25 scores negated
        ranked = sorted(fused, key=fused.__getitem__, reverse=True)
        for node_id in ranked:
            pool.fused.setdefault(node_id, fused[node_id])  # the whole question's ranking comes first
        return ranked

    def _grow(self, ranked: list[str], pool: Candidates) -> list[NodeWithScore]:
        """The top k distinct contexts, in the order of their best chunk."""
        neighbourhood = self._neighbourhood(ranked[: self.top_k * EXPANDED_HITS_PER_RESULT])
        results: list[NodeWithScore] = []
        shown: set[str] = set()
        for node_id in ranked:
            node = pool.nodes[node_id]
            members = neighbourhood.context(node_id, self.context_words, paged=node.metadata.get("page") is not None)
            ids = [c.id for c in members] if members else [node_id]
            if shown.issuperset(ids):
                continue
            shown.update(ids)
            if members and len(members) > 1:
                node = self._merged(node, members)
            elif bare_heading(node.get_content()):
                continue  # says nothing; its section's content is in other chunks
            results.append(self._result(node, ids, pool.fused[node_id], pool))
            if len(results) == self.top_k:
                break
        return results

    def _neighbourhood(self, hit_ids: list[str]) -> Neighbourhood:
        """One query for the pieces around the hits: the hit's piece, and for sections the pieces nearby."""
        wanted: dict[str, set[int]] = {}
        for node_id in hit_ids:
            match = _CHUNK_ID.match(node_id)
            if match:
                number = int(match["number"])
                wanted.setdefault(match["source"], set()).update(range(max(0, number - PIECE_RADIUS), number + PIECE_RADIUS + 1))
        if not wanted:
            return Neighbourhood([], {})
        pieces = [f"{source}#{n}" for source, numbers in wanted.items() for n in sorted(numbers)]
        rows = self._store.client.query(
            collection_name=self._store.collection_name,
            filter=f"doc_id in [{', '.join(json.dumps(p) for p in pieces)}]",
            output_fields=["id", "text", "section"],
        )
        chunks = [c for c in (Neighbour.from_row(row) for row in rows) if c is not None]
        return Neighbourhood(chunks, wanted)

    @staticmethod
    def _merged(hit: Any, members: list[Neighbour]) -> TextNode:
        """One node for a context of several chunks; it keeps the hit's metadata, so it is labelled with the hit's section."""
        return TextNode(
            id_=f"{members[0].id}..{members[-1].id}",
            text=join_chunks(members),
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
        node.metadata[QUESTION_DENSE_KEY] = max(pool.scores["dense_score"].values(), default=None)
        for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
            keys.extend(k for k in [*SCORE_KEYS, QUESTION_DENSE_KEY] if k not in keys)
        return NodeWithScore(node=node, score=score)
