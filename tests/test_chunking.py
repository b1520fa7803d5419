from llama_index.core.schema import Document, MetadataMode

from app.chunking import DocumentChunker
from app.ingestion import EMBED_KEYS_EXCLUDED, LLM_KEYS_EXCLUDED
from integrations.keyword_text import KEYWORD_FIELD, keyword_text

TEXT = "Call frobnicate() once per request. " * 40


def piece(**metadata: str) -> Document:
    return Document(
        text=TEXT,
        metadata={"source": "guide/frob_tuning.html", "file_name": "frob_tuning.html", "format": "html", **metadata},
        excluded_embed_metadata_keys=list(EMBED_KEYS_EXCLUDED),
        excluded_llm_metadata_keys=list(LLM_KEYS_EXCLUDED),
    )


def test_chunks_under_a_section_embed_the_section_path_not_the_file_name_which_bm25_keeps() -> None:
    chunks = DocumentChunker()([piece(section="Frobnication > Tuning")])
    assert len(chunks) > 1
    for chunk in chunks:
        embedded = chunk.get_content(metadata_mode=MetadataMode.EMBED)
        assert "Frobnication > Tuning" in embedded and "frob_tuning" not in embedded
        assert keyword_text("frob_tuning.html") in chunk.metadata[KEYWORD_FIELD]
        assert "frob_tuning.html" in chunk.get_content(metadata_mode=MetadataMode.LLM)


def test_chunks_without_a_section_embed_the_file_name() -> None:
    for chunk in DocumentChunker()([piece()]):
        assert "frob_tuning.html" in chunk.get_content(metadata_mode=MetadataMode.EMBED)


def test_a_section_path_too_long_for_the_chunk_is_shortened_to_fit_by_the_splitter_s_own_count() -> None:
    from llama_index.core.utils import get_tokenizer

    from app.chunking import METADATA_SHARE

    path = " > ".join(f"Frobnication settings for deployment scenario number {i}" for i in range(40))
    chunker = DocumentChunker()
    chunks = chunker([piece(section=path)])
    assert chunks, "a long section path does not stop the file"
    budget = int(chunker.chunk_size * METADATA_SHARE)
    for chunk in chunks:
        header = chunk.get_metadata_str(MetadataMode.EMBED)
        assert len(get_tokenizer()(header)) <= budget and "number 39" in header, header
