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
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from integrations.keyword_text import KEYWORD_FIELD, keyword_text

logger = logging.getLogger(__name__)

DENSE_FIELD = "embedding"
SPARSE_FIELD = "sparse_embedding"
NODE_FIELDS = ["_node_content", "_node_type", "text"]
SCORE_KEYS = ["dense_score", "bm25_score"]
SECTION_SEPARATOR = " > "
#: Chunk ids are "<piece id>:<n>" and piece ids "<source>#<n>" (app.chunking.chunk_id, app.ingestion).
_CHUNK_ID = re.compile(r"^(?P<piece>(?P<source>.*)#(?P<number>\d+)):(?P<index>\d+)$")
#: Pieces fetched on each side of a hit's piece when looking for its enclosing section.
PIECE_RADIUS = 12
#: Hits (in fused order) whose neighbourhood is fetched; later hits are used as they are.
EXPANDED_HITS_PER_RESULT = 3


def sources_filter(sources: list[str] | None) -> str:
    if not sources:
        return ""
    return f"source in [{', '.join(json.dumps(s) for s in sources)}]"


def words(text: str) -> int:
    return len(text.split())


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


def common_prefix(paths: Sequence[tuple[str, ...]]) -> tuple[str, ...]:
    prefix = paths[0]
    for path in paths[1:]:
        n = 0
        while n < min(len(prefix), len(path)) and prefix[n] == path[n]:
            n += 1
        prefix = prefix[:n]
    return prefix


class MilvusHybridRetriever(BaseRetriever):
    """Retrieve chunks by dense similarity and BM25, fused by weighted RRF, each grown to its section.

    Each returned node carries ``dense_score`` (best cosine among its chunks, or
    None when only BM25 found it) and ``bm25_score`` in its metadata, hidden
    from the LLM and embedder. ``context_words=0`` returns the bare chunks.
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
        self.sources = sources
        self.context_words = context_words
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

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        expr = sources_filter(self.sources)
        dense: list[tuple[Any, float, str]] = []
        if self.dense_weight > 0:
            embedding = query_bundle.embedding or self._embed_model.get_query_embedding(query_bundle.query_str)
            dense = self._search(embedding, DENSE_FIELD, "IP", self.dense_top_k, expr)
        terms = keyword_text(query_bundle.query_str) or query_bundle.query_str
        sparse = self._search(terms, SPARSE_FIELD, "BM25", self.sparse_top_k if self.sparse_weight > 0 else 0, expr)

        fused: dict[str, float] = {}
        nodes: dict[str, Any] = {}
        scores: dict[str, dict[str, float]] = {"dense_score": {}, "bm25_score": {}}
        for weight, hits, key in ((self.dense_weight, dense, "dense_score"), (self.sparse_weight, sparse, "bm25_score")):
            for rank, (node, score, node_id) in enumerate(hits, start=1):
                fused[node_id] = fused.get(node_id, 0.0) + weight / (self.rrf_k + rank)
                nodes.setdefault(node_id, node)
                scores[key][node_id] = abs(float(score))  # Milvus Lite reports BM25 scores negated
        ranked = sorted(fused, key=fused.__getitem__, reverse=True)
        if self.context_words <= 0:
            return [self._result(nodes[i], [i], fused[i], scores) for i in ranked[: self.top_k]]
        return self._grow(ranked, nodes, fused, scores)

    def _grow(
        self, ranked: list[str], nodes: dict[str, Any], fused: dict[str, float], scores: dict[str, dict[str, float]]
    ) -> list[NodeWithScore]:
        """The top k distinct contexts, in the order of their best chunk."""
        neighbourhood = self._neighbourhood(ranked[: self.top_k * EXPANDED_HITS_PER_RESULT])
        results: list[NodeWithScore] = []
        shown: set[str] = set()
        for node_id in ranked:
            node = nodes[node_id]
            members = neighbourhood.context(node_id, self.context_words, paged=node.metadata.get("page") is not None)
            ids = [c.id for c in members] if members else [node_id]
            if shown.issuperset(ids):
                continue
            shown.update(ids)
            if members and len(members) > 1:
                node = self._merged(node, members)
            results.append(self._result(node, ids, fused[node_id], scores))
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
        """One node for a context of several chunks, labelled with their common heading path."""
        common = common_prefix([c.section for c in members])
        metadata = dict(hit.metadata)
        if common:
            metadata["section"] = SECTION_SEPARATOR.join(common)
        return TextNode(
            id_=f"{members[0].id}..{members[-1].id}",
            text=join_chunks(members),
            metadata=metadata,
            excluded_embed_metadata_keys=list(hit.excluded_embed_metadata_keys),
            excluded_llm_metadata_keys=list(hit.excluded_llm_metadata_keys),
            relationships=dict(hit.relationships),
        )

    @staticmethod
    def _result(node: Any, ids: list[str], score: float, scores: dict[str, dict[str, float]]) -> NodeWithScore:
        node.metadata.pop(KEYWORD_FIELD, None)
        for key, by_id in scores.items():
            known = [by_id[i] for i in ids if i in by_id]
            node.metadata[key] = max(known) if known else None
        for keys in (node.excluded_llm_metadata_keys, node.excluded_embed_metadata_keys):
            keys.extend(k for k in SCORE_KEYS if k not in keys)
        return NodeWithScore(node=node, score=score)
