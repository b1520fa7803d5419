import shutil
from pathlib import Path

import pytest

from integrations.adapters import local_embedding
from integrations.adapters.local_embedding import LocalMiniLMEmbedding
from integrations.adapters.model_files import ModelFileError


def test_token_count_is_the_word_pieces_the_model_runs_on_without_padding_and_cut_at_max_tokens() -> None:
    embedder = LocalMiniLMEmbedding(max_tokens=32)
    short, long = "hello world", " ".join(["documentation"] * 200)
    assert embedder.count_tokens([short]) == 4  # [CLS] hello world [SEP]
    assert embedder.count_tokens([long]) == 32
    # Counted together, the short text is not padded to the long one's length.
    assert embedder.count_tokens([short, long]) == 36


def test_a_tokenizer_that_is_not_the_pinned_file_is_refused_before_loading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    changed = tmp_path / "tokenizer.json"
    shutil.copy(local_embedding.TOKENIZER_FILE, changed)
    changed.write_text(changed.read_text(encoding="utf-8").replace('"[UNK]"', '"[UNKNOWN]"', 1), encoding="utf-8")
    monkeypatch.setattr(local_embedding, "TOKENIZER_FILE", changed)
    with pytest.raises(ModelFileError, match=r"tokenizer .*tokenizer.json is not the pinned file .*make install"):
        LocalMiniLMEmbedding().get_query_embedding("hello")
    monkeypatch.setattr(local_embedding, "TOKENIZER_FILE", tmp_path / "missing.json")
    with pytest.raises(ModelFileError, match=r"missing.json cannot be read"):
        LocalMiniLMEmbedding().load()


def test_an_onnx_graph_that_is_not_the_pinned_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local_embedding, "ONNX_SHA256", "0" * 64)
    with pytest.raises(ModelFileError, match=r"ONNX graph .*model.onnx is not the pinned file"):
        LocalMiniLMEmbedding().load()


def test_the_pinned_files_load_and_embed() -> None:
    vector = LocalMiniLMEmbedding().get_query_embedding("How do I ingest a folder?")
    assert len(vector) == 384 and abs(sum(v * v for v in vector) - 1) < 1e-4
