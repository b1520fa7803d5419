"""Turns page/section documents into chunks: code by syntax tree, everything else by sentences; work per file is bounded
(docs/ingestion.md)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.node_parser import SentenceSplitter, TextSplitter
from llama_index.core.schema import BaseNode, Document, MetadataMode, TransformComponent

from app.readers.code import split_lines, too_complex_to_parse
from integrations.keyword_text import KEYWORD_FIELD, keyword_text
from integrations.node_ids import split_id

logger = logging.getLogger(__name__)

# Average characters per token in technical prose/code, to size code chunks in characters.
CHARS_PER_TOKEN = 4
#: Lines longer than this (minified code, a megabyte on one line) are cut by length, not by sentences.
LONG_LINE_CHARS = 100_000
#: Metadata embedded beside each chunk may take at most this share of the chunk (SentenceSplitter refuses more).
METADATA_SHARE = 0.5
SHORT_SECTION_KEY = "heading"  # the shortened section path, embedded instead of an over-long ``section``


class LineSplitter(TextSplitter):
    """Whole lines packed into chunks of at most ``chunk_chars`` characters (longer lines cut): the bounded fallback."""

    chunk_chars: int = Field(default=512, description="Largest chunk in characters.")

    def split_text(self, text: str) -> list[str]:
        return split_lines(text, self.chunk_chars)


class DocumentChunker(TransformComponent):
    """Split each document with the splitter that fits its format."""

    chunk_size: int = Field(default=128, description="Chunk size in tokens.")
    chunk_overlap: int = Field(default=32, description="Overlap between neighbouring chunks in tokens.")
    max_file_chunks: int = Field(default=5000, description="Files estimated at more chunks than this are refused.")

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        text_splitter = SentenceSplitter(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap, id_func=split_id)
        line_splitter = LineSplitter(chunk_chars=self.chunk_size * CHARS_PER_TOKEN, id_func=split_id)
        self._check_sizes(nodes)
        out: list[BaseNode] = []
        for node in nodes:
            if not isinstance(node, Document):
                out.append(node)
                continue
            node = self._fit_metadata(node)
            language = node.metadata.get("language")
            if language:
                out.extend(self._split_code(node, language, line_splitter))
            else:
                out.extend(self._split_text(node, text_splitter, line_splitter))
        for chunk in out:
            chunk.metadata[KEYWORD_FIELD] = keyword_text(chunk.get_content(metadata_mode=MetadataMode.EMBED))
            for keys in (chunk.excluded_embed_metadata_keys, chunk.excluded_llm_metadata_keys):
                if KEYWORD_FIELD not in keys:
                    keys.append(KEYWORD_FIELD)
            # A section path starts with the page's title: beside it the file name costs embedded tokens on every
            # chunk and adds little meaning. BM25's terms above keep it.
            if {"section", SHORT_SECTION_KEY} & chunk.metadata.keys() and "file_name" not in chunk.excluded_embed_metadata_keys:
                chunk.excluded_embed_metadata_keys.append("file_name")
        return out

    def _check_sizes(self, nodes: Sequence[BaseNode]) -> None:
        """Refuse a file whose pieces would make more than max_file_chunks chunks, before any splitting work."""
        chars: dict[str, int] = {}
        for node in nodes:
            if isinstance(node, Document):
                source = str(node.metadata.get("source", node.id_))
                chars[source] = chars.get(source, 0) + len(node.text)
        per_chunk = max(1, (self.chunk_size - self.chunk_overlap) * CHARS_PER_TOKEN)
        for source, total in chars.items():
            estimate = total // per_chunk
            if estimate > self.max_file_chunks:
                raise ValueError(
                    f"{source} would make about {estimate:,} chunks, over ingestion.max_file_chunks ({self.max_file_chunks:,}); "
                    "raise the limit to ingest it"
                )

    def _fit_metadata(self, document: Document) -> Document:
        """A copy of the document whose embedded metadata fits beside its chunks (a long title or section path is shortened)."""
        budget = int(self.chunk_size * METADATA_SHARE)
        if _metadata_tokens(document) <= budget:
            return document
        metadata = dict(document.metadata)
        embed_excluded = list(document.excluded_embed_metadata_keys)
        llm_excluded = list(document.excluded_llm_metadata_keys)
        section = str(metadata.get("section", ""))
        if section:
            embed_excluded.append("section")
            llm_excluded.append("section")
        chars = 400
        while True:
            if section:
                metadata[SHORT_SECTION_KEY] = _shorten_path(section, chars)
            for key, value in document.metadata.items():
                if key != "section" and isinstance(value, str) and len(value) > chars and key not in embed_excluded + llm_excluded:
                    metadata[key] = value[: chars - 1] + "…"
            fitted = document.model_copy(
                update={
                    "metadata": metadata,
                    "excluded_embed_metadata_keys": embed_excluded,
                    "excluded_llm_metadata_keys": llm_excluded,
                }
            )
            if _metadata_tokens(fitted) <= budget or chars <= 8:
                return fitted
            chars //= 2

    def _split_text(self, document: Document, splitter: SentenceSplitter, lines: LineSplitter) -> list[BaseNode]:
        if any(len(line) > LONG_LINE_CHARS for line in document.text.splitlines()):
            logger.info("%s: lines over %d characters; splitting by length", document.metadata.get("source"), LONG_LINE_CHARS)
            return lines.get_nodes_from_documents([document])
        return splitter.get_nodes_from_documents([document])

    def _split_code(self, document: Document, language: str, lines: LineSplitter) -> list[BaseNode]:
        from app.readers.code import make_code_splitter

        chunk_chars = self.chunk_size * CHARS_PER_TOKEN
        reason = too_complex_to_parse(document.text, language)
        if reason is None:
            try:
                splitter = make_code_splitter(language, chunk_chars)
                splitter.id_func = split_id
                chunks = splitter.get_nodes_from_documents([document])
            except (ValueError, RecursionError) as exc:  # unparseable source: keep it, split by lines
                reason = str(exc) or type(exc).__name__
            else:
                if len(chunks) <= 2 * (len(document.text) // chunk_chars + 1):
                    return chunks
                reason = f"the syntax split gave {len(chunks)} fragments"
        logger.info("%s: %s; splitting by lines", document.metadata.get("source"), reason)
        return lines.get_nodes_from_documents([document])


def _metadata_tokens(document: Document) -> int:
    """Tokens of the longer metadata header, by the tokenizer SentenceSplitter counts with (LlamaIndex's global one)."""
    from llama_index.core.utils import get_tokenizer

    text = max(document.get_metadata_str(MetadataMode.EMBED), document.get_metadata_str(MetadataMode.LLM), key=len)
    return len(get_tokenizer()(text))


def _shorten_path(section: str, chars: int) -> str:
    """The deepest titles of a section path that fit in ``chars`` characters, after "… > "."""
    if len(section) <= chars:
        return section
    titles = section.split(" > ")
    kept = titles[-1][: max(chars - 5, 1)]
    for title in reversed(titles[:-1]):
        if len(title) + len(kept) + 8 > chars:
            break
        kept = f"{title} > {kept}"
    return f"… > {kept}"
