"""Turns page/section documents into chunks: code by syntax tree, everything else by sentences."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from llama_index.core.bridge.pydantic import Field
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import BaseNode, Document, MetadataMode, TransformComponent

from integrations.keyword_text import KEYWORD_FIELD, keyword_text
from integrations.node_ids import split_id

logger = logging.getLogger(__name__)

# Average characters per token in technical prose/code, to size code chunks in characters.
CHARS_PER_TOKEN = 4


class DocumentChunker(TransformComponent):
    """Split each document with the splitter that fits its format."""

    chunk_size: int = Field(default=128, description="Chunk size in tokens.")
    chunk_overlap: int = Field(default=32, description="Overlap between neighbouring chunks in tokens.")

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        text_splitter = SentenceSplitter(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap, id_func=split_id)
        out: list[BaseNode] = []
        for node in nodes:
            if not isinstance(node, Document):
                out.append(node)
                continue
            language = node.metadata.get("language")
            if language:
                out.extend(self._split_code(node, language, text_splitter))
            else:
                out.extend(text_splitter.get_nodes_from_documents([node]))
        for chunk in out:
            chunk.metadata[KEYWORD_FIELD] = keyword_text(chunk.get_content(metadata_mode=MetadataMode.EMBED))
            for keys in (chunk.excluded_embed_metadata_keys, chunk.excluded_llm_metadata_keys):
                if KEYWORD_FIELD not in keys:
                    keys.append(KEYWORD_FIELD)
        return out

    def _split_code(self, document: Document, language: str, fallback: SentenceSplitter) -> list[BaseNode]:
        from app.readers.code import make_code_splitter

        try:
            splitter = make_code_splitter(language, self.chunk_size * CHARS_PER_TOKEN)
            splitter.id_func = split_id
            return splitter.get_nodes_from_documents([document])
        except ValueError as exc:  # unparseable source: keep it, split as text
            logger.info("%s: %s; splitting as text", document.metadata.get("source"), exc)
            return fallback.get_nodes_from_documents([document])
