"""Settings: profiles, environment overrides, masked secrets, and the config command."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from pydantic import BaseModel

from integrations.backend_errors import AllBackendsFailedError
from settings import available_profiles, load_settings
from settings.model import EmbeddingSettings, IngestionSettings, LLMSettings, RerankSettings, RetrievalSettings, default_index_dir
from tests.conftest import REPO


def test_local_profile_is_the_default_and_needs_no_network() -> None:
    s = load_settings()
    assert s.profile == "local"
    assert s.embedding.backend == "local" and s.llm.chain == [] and s.rerank.backend == "none"
    assert "local" in available_profiles()


def test_environment_overrides_nested_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCSRAG_RETRIEVAL__TOP_K", "9")
    monkeypatch.setenv("DOCSRAG_STORAGE__URI", "http://milvus.example:19530")
    s = load_settings()
    assert s.retrieval.top_k == 9
    assert s.storage.milvus_uri() == "http://milvus.example:19530"


def test_unknown_profile_names_the_available_ones() -> None:
    with pytest.raises(ValueError, match=r"Unknown settings profile .nope.*local"):
        load_settings("nope")


def test_config_command_masks_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "hf_fake_secret_value_for_test"
    env = {"HF_TOKEN": secret, "DOCSRAG_STORAGE__TOKEN": "root:milvus-password", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-m", "app", "config"], cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["hf_token"] == "**********" and data["storage"]["token"] == "**********"
    assert secret not in out.stdout + out.stderr and "milvus-password" not in out.stdout + out.stderr


def test_overlap_larger_than_chunk_is_rejected_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="chunk_overlap"):
        load_settings(ingestion={"chunk_size": 100, "chunk_overlap": 100})


def test_a_hugging_face_space_is_detected_unless_a_profile_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACE_ID", "someone/docsrag")
    s = load_settings()
    assert s.profile == "hf_spaces" and "SPACE_ID" in s.profile_reason
    assert s.embedding.backend == "hf_api" and s.llm.chain == ["hf_api"] and s.rerank.backend == "hf_api"
    assert load_settings("local").profile == "local"
    monkeypatch.setenv("DOCSRAG_PROFILE", "local")
    assert load_settings().profile_reason == "from DOCSRAG_PROFILE"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HF_TOKEN": "", "HUGGINGFACE_API_TOKEN": "hf_from_api_token"}, "hf_from_api_token"),  # empty must not hide the next
        ({"HUGGING_FACE_HUB_TOKEN": "hf_legacy"}, "hf_legacy"),
        ({"HF_TOKEN": "hf_first", "HUGGING_FACE_HUB_TOKEN": "hf_legacy"}, "hf_first"),
    ],
)
def test_the_token_is_the_first_non_empty_of_the_documented_variables(monkeypatch, env, expected) -> None:
    for name in ("HF_TOKEN", "HUGGINGFACE_API_TOKEN", "HUGGING_FACE_HUB_TOKEN", "DOCSRAG_HF_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings("local").hf_token.get_secret_value() == expected


def test_offline_mode_is_named_when_it_blocks_an_api_call(monkeypatch, loopback) -> None:
    from huggingface_hub import constants

    from integrations.adapters.hf_chat_llm import HFChatLLM
    from integrations.fallback_llm import FallbackLLM
    from tests.conftest_hf import FAKE_TOKEN

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hf = HFChatLLM(model_name="Qwen/Qwen2.5-7B-Instruct-1M", token=FAKE_TOKEN, base_url=loopback.url, timeout=1.0)
    last = HFChatLLM(model_name="org/model-b", token=FAKE_TOKEN, base_url=loopback.url, timeout=1.0)
    with pytest.raises(AllBackendsFailedError, match="offline mode is on"):
        FallbackLLM(members=[hf, last]).chat([ChatMessage(role="user", content="hi")])


def test_precedence_is_overrides_then_environment_then_dotenv_then_profile(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DOCSRAG_EMBEDDING__TIMEOUT_S=7\nDOCSRAG_EMBEDDING__BATCH_SIZE=6\n", encoding="utf-8")
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "from-env"))
    monkeypatch.setenv("DOCSRAG_EMBEDDING__BATCH_SIZE", "9")
    s = load_settings("hf_api", storage={"index_dir": str(tmp_path / "from-cli")}, rerank={"max_candidates": 12})
    assert s.storage.index_dir == tmp_path / "from-cli"  # an explicit override (the CLI's --index) beats the environment
    assert s.embedding.batch_size == 9 and s.embedding.timeout_s == 7  # environment over .env over the profile's 32
    assert s.embedding.backend == "hf_api" and s.rerank.backend == "hf_api" and s.rerank.max_candidates == 12  # merged by section


def test_dotenv_chooses_the_profile_and_the_environment_beats_it(monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DOCSRAG_PROFILE=ollama\n", encoding="utf-8")
    s = load_settings()
    assert (s.profile, s.profile_reason) == ("ollama", "from DOCSRAG_PROFILE in .env") and s.llm.chain == ["ollama"]
    monkeypatch.setenv("DOCSRAG_PROFILE", "local")
    assert load_settings().profile == "local"
    assert load_settings("hf_spaces").profile == "hf_spaces"


def test_one_setting_decides_how_many_sources_an_answer_has(hf_env) -> None:
    from app.composition import build_reranker

    settings = load_settings("hf_api", retrieval={"top_k": 3})
    assert build_reranker(settings).top_n == 3
    with pytest.raises(ValueError, match=r"rerank.top_n is gone: retrieval.top_k"):
        load_settings("hf_api", rerank={"top_n": 2})


def test_the_default_index_is_the_per_user_data_folder_wherever_the_process_starts(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    for folder in (tmp_path, REPO):
        monkeypatch.chdir(folder)
        assert load_settings().storage.index_dir == tmp_path / "data" / "docsrag" / "index"


def _defaults(component: type) -> dict[str, Any]:
    if issubclass(component, BaseModel):
        return {name: field.default for name, field in component.model_fields.items()}
    return {name: p.default for name, p in inspect.signature(component).parameters.items()}


def test_component_defaults_are_the_settings_defaults() -> None:
    from app.chunking import DocumentChunker
    from integrations.adapters.local_embedding import LocalMiniLMEmbedding
    from integrations.adapters.local_llm import LocalGGUFLLM
    from integrations.cross_encoder_rerank import CrossEncoderRerank
    from integrations.evidence_filter import WeakEvidenceFilter
    from integrations.fallback_llm import FallbackLLM
    from integrations.hybrid_retriever import MilvusHybridRetriever
    from integrations.meaning_rerank import MeaningRerank

    same_names = {
        DocumentChunker: (IngestionSettings, ["chunk_size", "chunk_overlap"]),
        MilvusHybridRetriever: (RetrievalSettings, ["top_k", "dense_top_k", "sparse_top_k", "rrf_k", "dense_weight", "sparse_weight"]),
        WeakEvidenceFilter: (RetrievalSettings, ["min_dense_score", "min_dense_score_missing_names"]),
        LocalMiniLMEmbedding: (EmbeddingSettings, ["threads", "max_tokens"]),
        LocalGGUFLLM: (LLMSettings, ["n_threads", "context_window", "max_tokens", "temperature"]),
        FallbackLLM: (LLMSettings, ["deadline_s", "context_window"]),
        CrossEncoderRerank: (RerankSettings, ["model", "max_candidates"]),
    }
    pairs = [(component, name, model, name) for component, (model, names) in same_names.items() for name in names]
    pairs += [
        (LocalMiniLMEmbedding, "onnx_batch_size", EmbeddingSettings, "batch_size"),
        (FallbackLLM, "num_output", LLMSettings, "max_tokens"),
        (MeaningRerank, "weight", RetrievalSettings, "meaning_weight"),
        (MeaningRerank, "rrf_k", RetrievalSettings, "rrf_k"),
        (CrossEncoderRerank, "top_n", RetrievalSettings, "top_k"),
    ]
    for component, parameter, model, field in pairs:
        assert _defaults(component)[parameter] == _defaults(model)[field], f"{component.__name__}.{parameter} != {model.__name__}.{field}"


def test_a_space_with_persistent_storage_keeps_the_index_there_unless_told_otherwise(monkeypatch, tmp_path) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("SPACE_ID", "someone/docsrag")
    monkeypatch.setenv("DOCSRAG_SPACE_DATA_DIR", str(data))
    assert load_settings().storage.index_dir == default_index_dir()  # no persistent storage bought: the default
    data.mkdir()
    assert load_settings().storage.index_dir == data / "docsrag-index"
    assert load_settings("local").storage.index_dir == default_index_dir()  # only the hf_spaces profile
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "mine"))
    assert load_settings().storage.index_dir == tmp_path / "mine"
