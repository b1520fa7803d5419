"""The one typed settings model of docsrag.

Precedence, highest first: explicit overrides passed to :func:`load_settings`,
``DOCSRAG_*`` environment variables (nested with ``__``, e.g.
``DOCSRAG_RETRIEVAL__TOP_K=8``), a ``.env`` file, the YAML profile, defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from dotenv import dotenv_values
from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, InitSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

PROFILES_DIR = Path(__file__).resolve().parent
DEFAULT_PROFILE = "local"
SPACE_PROFILE = "hf_spaces"
SPACE_VARIABLES = ("SPACE_ID", "SPACE_HOST")
SPACE_DATA_DIR = Path("/data")  # where a Space mounts its persistent storage


def space_data_dir() -> Path:
    """A Space's persistent storage: /data, or DOCSRAG_SPACE_DATA_DIR where a container mounts it elsewhere."""
    return Path(os.environ.get("DOCSRAG_SPACE_DATA_DIR") or SPACE_DATA_DIR)


class EmbeddingSettings(BaseModel):
    backend: Literal["local", "hf_api"] = Field(
        "local", description="Embedder: the ONNX model shipped in a package (local) or the HF Inference API."
    )
    model: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        description="Model id; the local backend always runs all-MiniLM-L6-v2, whose vectors match this id's.",
    )
    dimension: int = Field(
        384, ge=1, description="Length of the hf_api model's vectors (all-MiniLM-L6-v2: 384); `doctor` checks it with one real call."
    )
    batch_size: int = Field(8, ge=1, description="Texts per embedding call (one onnxruntime run locally, one API request).")
    threads: int = Field(2, ge=1, description="onnxruntime intra-op threads for the local embedder.")
    max_tokens: int = Field(256, ge=16, le=512, description="Word pieces per text; all-MiniLM-L6-v2 was trained on 256.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one HF API embedding request (hf_api backend).")
    cache: bool = Field(True, description="Keep HF API embeddings in a SQLite cache keyed by (model, text hash), so no text is paid twice.")
    cache_path: str = Field("", description="Embedding cache file; empty: hf_embedding_cache.sqlite inside storage.index_dir.")


LLMBackend = Literal["hf_api", "ollama", "local"]


class LLMSettings(BaseModel):
    chain: list[LLMBackend] = Field(
        default_factory=list,
        description="Answer backends tried in order; the extractive answerer always comes last. Empty: extractive answers only.",
    )
    hf_models: list[str] = Field(
        default_factory=lambda: ["Qwen/Qwen2.5-7B-Instruct-1M", "meta-llama/Llama-3.1-8B-Instruct", "google/gemma-2-2b-it"],
        description="HF chat models tried in order (suffixes :fastest, :cheapest or :<provider> allowed).",
    )
    ollama_model: str = Field("llama3.2:3b", description="Ollama model name.")
    ollama_base_url: str = Field("http://127.0.0.1:11434", description="Ollama server URL.")
    ollama_keep_alive: str = Field("30m", description="How long Ollama keeps the model loaded after a request (its default is 5m).")
    ollama_load_allowance_s: float = Field(
        60.0, ge=0, description="Seconds added to timeout_s for Ollama's first reply, which may wait for a cold model load."
    )
    gguf_path: str = Field("", description="GGUF model file for the local backend; empty uses the SmolLM2-135M package if installed.")
    n_threads: int = Field(1, ge=1, description="llama.cpp threads (they spin-wait: fewer can be faster on a busy machine).")
    temperature: float = Field(0.1, gt=0.0, le=2.0, description="Sampling temperature (the HF API rejects 0).")
    max_tokens: int = Field(512, ge=16, description="Maximum tokens per answer.")
    context_window: int = Field(4096, ge=512, description="Context window assumed for prompt packing and sent to Ollama.")
    timeout_s: float = Field(30.0, gt=0, description="Timeout of one HTTP request to an LLM backend.")
    deadline_s: float = Field(60.0, gt=0, description="Time budget per question across retries and fallbacks.")


class RerankSettings(BaseModel):
    backend: Literal["none", "hf_api", "local"] = Field(
        "none",
        description="Cross-encoder reranker: none (none ships offline: the fused order), hf_api, or local (ONNX model in model_dir).",
    )
    model: str = Field(
        "cross-encoder/ms-marco-MiniLM-L6-v2", description="Cross-encoder model id (hf_api; names the local model in notices)."
    )
    model_dir: Path | None = Field(
        None, description="local: a directory with a cross-encoder's tokenizer.json and model.onnx (or onnx/model.onnx)."
    )
    max_candidates: int = Field(20, ge=1, description="Most candidates sent to the reranker per question.")
    timeout_s: float = Field(
        10.0, gt=0, description="Timeout of the one reranking request per question; on failure the fused order is kept."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_top_n(cls, data: Any) -> Any:
        if isinstance(data, dict) and "top_n" in data:
            raise ValueError("rerank.top_n is gone: retrieval.top_k (DOCSRAG_RETRIEVAL__TOP_K) sets how many sources an answer has")
        return data


class RetrievalSettings(BaseModel):
    max_question_chars: int = Field(
        4000, ge=100, description="Longest question accepted, in characters; a longer one is refused before any paid call."
    )
    top_k: int = Field(
        5,
        ge=1,
        description=(
            "Sources per answer: the passages the last ranking stage (reranker or fusion) hands to the answer step, each a "
            "chunk grown to its section (at most ~250 words)."
        ),
    )
    dense_top_k: int = Field(
        50,
        ge=1,
        description="Candidates from the vector search, fused with the BM25 ones (why 50: docs/benchmarks.md, issue #23 levers).",
    )
    sparse_top_k: int = Field(50, ge=1, description="Candidates from the BM25 search.")
    rrf_k: int = Field(10, ge=1, description="Reciprocal rank fusion constant (small: the top ranks of each list count most).")
    dense_weight: float = Field(0.5, ge=0.0, description="Weight of the dense ranking in the fusion (BM25 ranks technical docs better).")
    sparse_weight: float = Field(1.0, ge=0.0, description="Weight of the BM25 ranking in the fusion.")
    meaning_weight: float = Field(
        0.0,
        ge=0.0,
        description="Second ranking stage (integrations.meaning_rerank): weight of whole-passage meaning when dense and BM25 "
        "disagree on the first passage; 0 turns it off. Off: it did not win on every corpus's dev half (README Quality).",
    )
    meaning_candidates: int = Field(20, ge=1, description="Passages the second ranking stage reorders.")
    min_dense_score: float = Field(
        0.44, ge=-1.0, le=1.0, description="Below this cosine similarity of the best chunk, the docs are said not to cover the question."
    )
    min_dense_score_missing_names: float = Field(
        0.55,
        ge=-1.0,
        le=1.0,
        description="The same for a question naming something no passage contains (an acronym, product or identifier such as FPGA).",
    )


# Defaults of ingestion.ignore: search pages, indexes, source listings and static assets that documentation
# generators write beside the pages (docs/ingestion.md).
DEFAULT_IGNORE: tuple[str, ...] = (
    # Sphinx HTML builds
    "_static",
    "_modules",
    "searchindex.js",
    "genindex.html",
    "genindex-*.html",
    "search.html",
    "py-modindex.html",
    "*-modindex.html",
    # MkDocs
    "search/main.js",
    "search/worker.js",
    "search/lunr.js",
    "assets/javascripts",
    "404.html",
    # Doxygen
    "*_source.html",
    "*-members.html",
    "globals*.html",
    "functions*.html",
    "namespacemembers*.html",
    "search/*_[0-9]*.html",
    "search/*_[0-9]*.js",
    "search/search.js",
    "search/searchdata.js",
    "jquery.js",
    "dynsections.js",
    "menu.js",
    "menudata.js",
    "navtree*.js",
    "resize.js",
    # DocBook chunked HTML: the back-of-book index
    "ix[0-9][0-9].html",
    # minified bundles of any site
    "*.min.js",
)


class IngestionSettings(BaseModel):
    chunk_size: int = Field(128, ge=64, description="Chunk size in tokens (small chunks match precisely; hits grow to their section).")
    chunk_overlap: int = Field(32, ge=0, description="Overlap between neighbouring chunks in tokens.")
    max_file_mb: float = Field(50.0, gt=0, description="Files larger than this are skipped with a message.")
    startup_folders: list[Path] = Field(
        default_factory=list, description="Folders the page ingests when it starts on an empty index (the hf_spaces profile: docs)."
    )
    batch_files: int = Field(
        16, ge=1, description="Files committed to the index per step; a killed run resumes after the last committed step."
    )
    batch_mb: float = Field(
        8.0, gt=0, description="A step also ends once its files hold this many megabytes, so large files commit in small steps."
    )
    keywords_first: bool = Field(
        True,
        description="Store each batch's chunks with their keywords first (searchable by BM25 at once) and embed them in a "
        "second pass over the whole folder; false: embed each batch before it is stored (one pass).",
    )
    max_file_chunks: int = Field(
        5000, ge=1, description="A file estimated at more chunks than this is skipped with a message (bounds work per file)."
    )
    upload_max_files: int = Field(50, ge=1, description="Uploads one page session may hold before adding them to the index.")
    upload_session_mb: float = Field(
        250.0, gt=0, description="Megabytes of uploads one page session may hold in memory before adding them to the index."
    )
    upload_total_mb: float = Field(500.0, gt=0, description="Megabytes of uploads the page holds in memory for all sessions together.")
    ignore: list[str] = Field(
        default_factory=lambda: list(DEFAULT_IGNORE),
        description="Globs left out of every ingest: without '/' they match any file or folder name, with '/' the end of its "
        "path. The defaults leave out the search pages, indexes and static files of Sphinx, MkDocs, Doxygen and DocBook builds.",
    )


class SourcesSettings(BaseModel):
    base_url: str = Field(
        "",
        description=(
            "Published site of the indexed docs (e.g. https://docs.example.org/en/latest): sources then link to "
            "<base_url>/<path> (.md/.rst/.txt as .html) at their page or section anchor. Empty: PDFs open from the page."
        ),
    )

    @field_validator("base_url")
    @classmethod
    def _web_address(cls, value: str) -> str:
        """Only a web site: a file:, javascript: or data: address would become a live link on the page."""
        parsed = urlsplit(value.strip())
        if value.strip() and (parsed.scheme.lower() not in ("http", "https") or not parsed.netloc):
            raise ValueError(f"sources.base_url must be an http:// or https:// address of the published docs, not {value!r}")
        return value.strip()


class ModelPrice(BaseModel):
    input_per_m: float = Field(0.0, ge=0, description="USD per million input tokens.")
    output_per_m: float = Field(0.0, ge=0, description="USD per million output tokens.")
    per_k_calls: float = Field(0.0, ge=0, description="USD per thousand calls (embeddings, rerank).")


def _default_prices() -> dict[str, ModelPrice]:
    # Estimates for Hugging Face Inference Providers (USD); update from your provider's billing page.
    return {
        "Qwen/Qwen2.5-7B-Instruct-1M": ModelPrice(input_per_m=0.30, output_per_m=0.30),
        "meta-llama/Llama-3.1-8B-Instruct": ModelPrice(input_per_m=0.06, output_per_m=0.06),
        "google/gemma-2-2b-it": ModelPrice(input_per_m=0.10, output_per_m=0.10),
        "sentence-transformers/all-MiniLM-L6-v2": ModelPrice(per_k_calls=0.02),
        "cross-encoder/ms-marco-MiniLM-L6-v2": ModelPrice(per_k_calls=0.05),
    }


class BudgetSettings(BaseModel):
    monthly_cap_usd: float = Field(
        25.0, ge=0, description="Hard monthly cap on estimated API spend; at the cap only local backends answer."
    )
    degrade_fraction: float = Field(
        0.8, gt=0, le=1, description="Past this fraction of the cap, use the cheapest model and fewer rerank candidates."
    )
    alert_spend_usd: float = Field(20.0, ge=0, description="Alert once when this month's spend passes this.")
    alert_latency_s: float = Field(15.0, gt=0, description="Alert when an answer takes longer than this.")
    alert_error_rate: float = Field(
        0.05, ge=0, le=1, description="Alert when the API error rate over the last alert_window calls passes this."
    )
    alert_window: int = Field(50, ge=1, description="Calls considered for the error-rate alert.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=_default_prices, description="Price per model id (suffixes like :fastest ignored)."
    )
    default_price: ModelPrice = Field(
        default_factory=lambda: ModelPrice(input_per_m=0.5, output_per_m=0.5, per_k_calls=0.1),
        description="Price assumed for models missing from the table (deliberately high).",
    )


def default_index_dir() -> Path:
    """The per-user data folder (~/.local/share/docsrag/index on Linux, $XDG_DATA_HOME honoured): the same from any folder."""
    return platformdirs.user_data_path("docsrag", appauthor=False) / "index"


class StorageSettings(BaseModel):
    index_dir: Path = Field(
        default_factory=default_index_dir,
        description="Directory holding the index (Milvus Lite data, docstore, uploads); default: the per-user data folder.",
    )
    uri: str = Field("", description="Milvus URI. Empty: Milvus Lite inside index_dir. http://host:19530 for a Milvus server or cluster.")
    token: SecretStr | None = Field(None, description="Milvus token (user:password or API key) for a server or Zilliz Cloud.")
    collection: str = Field("docsrag", description="Milvus collection name.")
    lite_max_chunks: int = Field(
        100_000,
        ge=0,
        description=(
            "Chunks an embedded (Milvus Lite) index serves within the latency and reopen targets of docs/scaling.md; above it a "
            "warning at start-up suggests a Milvus server. 0 turns the warning off."
        ),
    )

    @field_validator("index_dir")
    @classmethod
    def _a_folder(cls, value: Path) -> Path:
        if value.exists() and not value.is_dir():
            raise ValueError(f"storage.index_dir (--index) {str(value)!r} is a file: give the folder that holds (or will hold) the index")
        return value

    def lite_file(self) -> Path:
        """The embedded index's Milvus Lite file."""
        return self.index_dir / "milvus.db"

    def milvus_uri(self) -> str:
        return self.uri or str(self.lite_file())


class FeedbackSettings(BaseModel):
    log_questions: bool = Field(
        True,
        description="Log every question with its outcome and the reader's feedback in questions.sqlite beside the index "
        "(read with `python -m app gaps`); tokens are never stored. false: nothing is logged.",
    )


class Settings(BaseSettings):
    """Effective settings. Build with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="DOCSRAG_", env_nested_delimiter="__", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    profile: str = Field(DEFAULT_PROFILE, description="Name of the YAML profile under settings/ that was loaded.")
    profile_reason: str = Field("the default", description="Why this profile was chosen (shown in the page).")
    hf_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("DOCSRAG_HF_TOKEN", "HF_TOKEN", "HUGGINGFACE_API_TOKEN", "HUGGING_FACE_HUB_TOKEN", "hf_token"),
        description="Hugging Face token; the first non-empty of HF_TOKEN, HUGGINGFACE_API_TOKEN, HUGGING_FACE_HUB_TOKEN (legacy).",
    )
    hf_base_url: str = Field(
        "https://router.huggingface.co", description="Base URL of the Hugging Face router; every HF URL is built from it."
    )
    embedding: EmbeddingSettings = Field(default_factory=EmbeddingSettings)
    llm: LLMSettings = Field(default_factory=LLMSettings)
    rerank: RerankSettings = Field(default_factory=RerankSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    ingestion: IngestionSettings = Field(default_factory=IngestionSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    sources: SourcesSettings = Field(default_factory=SourcesSettings)
    budget: BudgetSettings = Field(default_factory=BudgetSettings)
    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML profile named by the `profile` argument sits between .env and the defaults; sources merge deeply.
        profile = init_settings.init_kwargs.get("profile", DEFAULT_PROFILE)
        sources = [init_settings, env_settings, dotenv_settings, YamlConfigSettingsSource(settings_cls, PROFILES_DIR / f"{profile}.yaml")]
        data = space_data_dir()
        if profile == SPACE_PROFILE and data.is_dir() and os.access(data, os.W_OK):
            # Spaces' persistent storage survives restarts; the profile and the environment can still override it.
            sources.append(InitSettingsSource(settings_cls, {"storage": {"index_dir": str(data / "docsrag-index")}}))
        return (*sources, file_secret_settings)

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.ingestion.chunk_overlap >= self.ingestion.chunk_size:
            raise ValueError("ingestion.chunk_overlap must be smaller than ingestion.chunk_size")
        return self

    def masked(self) -> dict[str, Any]:
        """Settings as plain data with every secret shown as '**********'."""
        return self.model_dump(mode="json")  # SecretStr dumps masked in json mode


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def choose_profile(profile: str | None = None) -> tuple[str, str]:
    """The profile to load and why: explicit argument, DOCSRAG_PROFILE (environment, then .env), a detected HF Space, or the default."""
    if profile:
        return profile, "chosen explicitly"
    if os.environ.get("DOCSRAG_PROFILE"):
        return os.environ["DOCSRAG_PROFILE"], "from DOCSRAG_PROFILE"
    # The same .env file the settings read (Settings.model_config's env_file, relative to the working folder).
    if from_file := dotenv_values(Settings.model_config["env_file"]).get("DOCSRAG_PROFILE"):
        return from_file, "from DOCSRAG_PROFILE in .env"
    for variable in SPACE_VARIABLES:
        if os.environ.get(variable):
            return SPACE_PROFILE, f"running on a Hugging Face Space ({variable} is set)"
    return DEFAULT_PROFILE, "the default"


def load_settings(profile: str | None = None, **overrides: Any) -> Settings:
    """Load a YAML profile, apply the environment, then ``overrides`` (nested dicts allowed)."""
    name, reason = choose_profile(profile)
    path = PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"Unknown settings profile {name!r}: expected {path}. Available: {', '.join(available_profiles())}")
    return Settings(profile=name, profile_reason=reason, **overrides)
