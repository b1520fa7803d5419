"""Settings: profiles, environment overrides, masked secrets, and the config command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from settings import available_profiles, load_settings
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
