"""A loopback fake of the Hugging Face router and Ollama, faithful to their published contracts (GUIDE §3).

Stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive (``Content-Length`` on
every reply, chunked transfer for streams), so client bugs that only show on
keep-alive connections show here too. It says no where the real services do:

- every HF route: 401 without a token or with one it does not know (``tokens``), except a model's
  info on the Hub API (``/api/models/{id}``), which is public without a token;
  with ``echo_auth`` the error body repeats the ``Authorization`` header, as a
  careless proxy would;
- ``POST /v1/chat/completions`` (OpenAI-compatible): 400 with an OpenAI-style
  ``{"error": {...}}`` body for a model no provider serves (``chat_models``) and
  for a ``system`` message sent to a model whose template has no system role
  (``no_system_models``; from a model served by text-generation-inference, ``tgi_models``,
  TGI's 422 ``{"error": "Template error: ...", "error_type": "template_error"}``); answers cut at ``max_tokens`` words end with
  ``finish_reason: "length"``; streams are SSE with a comment line, ``usage: null``
  on ordinary chunks and a usage-only chunk (``choices: []``) only when
  ``stream_options.include_usage`` is sent;
- ``POST /hf-inference/models/{id}/pipeline/feature-extraction``: vectors from a
  deterministic word-hashing function (not the app's local model, so a client that
  pools or normalises wrongly is caught), 413 above 32 inputs (text-embeddings-inference's
  default ``max_client_batch_size``), token-level output for ``token_level_models``;
- ``POST /hf-inference/models/{id}`` for text-ranking models: text-embeddings-inference's
  rerank contract, ``{"query", "texts"}`` → ``[{"index", "score"}]`` sorted by score,
  422 for any other body, 413 above 32 texts;
- ``POST /api/chat`` (JSON or NDJSON) and ``POST /api/show`` (Ollama): 404
  ``model 'x' not found`` for models not pulled (``ollama_models``), ``done_reason:
  "length"`` when ``options.num_predict`` cuts the answer.

Faults are injected per route and model with :meth:`LoopbackServer.add_fault`.
Every request is recorded (path, lower-cased headers, JSON body).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

CHAT, EMBED, RERANK, OLLAMA_CHAT, OLLAMA_SHOW, WHOAMI, MAPPING = (
    "chat", "embed", "rerank", "ollama_chat", "ollama_show", "whoami", "mapping",
)  # fmt: skip
FAULT_KINDS = (
    "429", "429_date", "429_ratelimit", "503", "503_queue_full", "slow", "malformed", "stream_error",
    "stream_error_after_token", "500", "no_usage", "huge_usage", "crlf", "trickle",
)  # fmt: skip
MAX_CLIENT_BATCH = 32
DIM = 384
ACCEPTED_TOKENS = frozenset({"hf_test_token_not_real", "hf_bench_token_not_real", "hf_loopback_token"})
CHAT_MODELS = frozenset({
    "Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct-1M", "meta-llama/Llama-3.1-8B-Instruct", "google/gemma-2-2b-it",
    "google/gemma-2-9b-it", "org/model-a", "org/model-b", "loopback/chat-model",
})  # fmt: skip
NO_SYSTEM_MODELS = frozenset({"google/gemma-2-2b-it", "google/gemma-2-9b-it"})
TGI_MODELS = frozenset({"google/gemma-2-9b-it"})
EMBEDDING_MODELS = frozenset({"sentence-transformers/all-MiniLM-L6-v2", "other/model"})
RERANK_MODELS = frozenset({"cross-encoder/ms-marco-MiniLM-L6-v2"})
OLLAMA_MODELS = frozenset({"llama3.2:3b"})
_WORD = re.compile(r"\w+")
_SOURCE = re.compile(r'<source id="(\d+)"[^\n]*>\n(.*?)\n</source>', re.DOTALL)
_CONDENSE = re.compile(r"<Chat History>\n(?P<history>.*?)\n<Follow Up Message>\n(?P<follow_up>.*?)\n<Standalone question>", re.DOTALL)
_QUESTION = re.compile(r"<question>\n(.*?)\n</question>", re.DOTALL)


@dataclass
class Recorded:
    method: str
    path: str
    route: str
    model: str | None
    headers: dict[str, str]
    body: Any
    raw_body: str


@dataclass
class Fault:
    route: str
    kind: str
    model: str | None = None  # None: any model
    times: int | None = None  # None: every matching request
    retry_after: float = 30.0
    estimated_time: float = 20.0
    delay: float = 2.0
    hits: int = 0

    def matches(self, route: str, model: str | None) -> bool:
        return self.route == route and (self.model is None or self.model == model) and (self.times is None or self.hits < self.times)


@dataclass
class LoopbackState:
    requests: list[Recorded] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    tokens: set[str] = field(default_factory=lambda: set(ACCEPTED_TOKENS))
    echo_auth: bool = False
    chat_models: set[str] = field(default_factory=lambda: set(CHAT_MODELS))
    no_system_models: set[str] = field(default_factory=lambda: set(NO_SYSTEM_MODELS))
    tgi_models: set[str] = field(default_factory=lambda: set(TGI_MODELS))
    embedding_models: set[str] = field(default_factory=lambda: set(EMBEDDING_MODELS))
    rerank_models: set[str] = field(default_factory=lambda: set(RERANK_MODELS))
    ollama_models: set[str] = field(default_factory=lambda: set(OLLAMA_MODELS))
    token_level_models: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def canned_answer(model: str, messages: list[dict[str, Any]]) -> str:
    """A deterministic cited answer: the opening of source 1, marked [1], naming the model."""
    text = "\n".join(str(m.get("content") or "") for m in messages)
    sources = _SOURCE.findall(text)
    if sources:
        words = sources[0][1].split()[:24]
        return f"According to the documentation, {' '.join(words)} [{sources[0][0]}]. (model {model})"
    condense = _CONDENSE.search(text)
    if condense:  # LlamaIndex's condense prompt: the follow-up, with the chat's first question as its context
        first = re.search(r"^user: (.*)$", condense["history"], re.MULTILINE)
        return f"{condense['follow_up'].strip()} (after: {first.group(1).strip()})" if first else condense["follow_up"].strip()
    question = _QUESTION.search(text)
    asked = question.group(1) if question else (messages[-1].get("content") if messages else "")
    return f"Echo from {model}: {asked}"


def cut(answer: str, max_words: Any) -> tuple[str, str]:
    """The answer cut at ``max_words`` words (the fake's tokens) and its finish reason."""
    words = re.findall(r"\S+\s*", answer)
    if isinstance(max_words, int) and 0 < max_words < len(words):
        return "".join(words[:max_words]).rstrip(), "length"
    return answer, "stop"


def overlap_logit(query: str, doc: str) -> float:
    q = {w.lower() for w in _WORD.findall(query)}
    d = {w.lower() for w in _WORD.findall(doc)}
    if not q:
        return -5.0
    return 10.0 * len(q & d) / len(q) - 5.0


@functools.lru_cache(maxsize=65536)
def word_vector(word: str) -> np.ndarray:
    """A fixed pseudo-random unit direction per lower-cased word (seeded by its sha256)."""
    seed = int.from_bytes(hashlib.sha256(word.lower().encode()).digest()[:8], "little")
    vector = np.random.default_rng(seed).standard_normal(DIM - 1)
    return vector / np.linalg.norm(vector)


def hashed_states(text: str) -> np.ndarray:
    """The fake model's token-level states: one row per word, ``[1, word direction]``."""
    words = _WORD.findall(text)[:256] or [""]
    return np.asarray([np.concatenate(([1.0], word_vector(w))) for w in words])


def hashed_embedding(text: str) -> list[float]:
    """The fake model's sentence vector, deliberately not unit length: ``3 * [1, unit mean of the word directions]``.

    The cosine of two texts is ``(1 + cos of their bags of words) / 2``: related texts score high, ranking follows word overlap.
    """
    rest = hashed_states(text)[:, 1:].mean(axis=0)
    rest = rest / max(float(np.linalg.norm(rest)), 1e-12)
    return (3.0 * np.concatenate(([1.0], rest))).tolist()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes: no 40 ms delayed-ACK stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # silence stderr access log
        return

    # ---- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, body: bytes, seconds: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        pieces = 8
        step = max(1, len(body) // pieces)
        for start in range(0, len(body), step):
            self.wfile.write(body[start : start + step])
            self.wfile.flush()
            time.sleep(seconds / pieces)

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: str) -> None:
        raw = data.encode()
        self.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        self.wfile.flush()

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _route(self) -> tuple[str, str | None]:
        path = self.path.split("?")[0]
        if path.endswith("/chat/completions"):
            return CHAT, None
        if path.startswith("/hf-inference/models/") and path.endswith("/pipeline/feature-extraction"):
            return EMBED, path[len("/hf-inference/models/") : -len("/pipeline/feature-extraction")]
        if path.startswith("/hf-inference/models/"):
            return RERANK, path[len("/hf-inference/models/") :]
        if path == "/api/chat":
            return OLLAMA_CHAT, None
        if path == "/api/show":
            return OLLAMA_SHOW, None
        if path == "/api/whoami-v2":
            return WHOAMI, None
        if path.startswith("/api/models/"):
            return MAPPING, path[len("/api/models/") :]
        return "unknown", None

    def _unauthorised(self, route: str) -> bool:
        """401 on the HF routes without a token this fake knows, the way the router answers (body may echo the header)."""
        if route.startswith("ollama") or route == "unknown":
            return False
        header = self.headers.get("Authorization") or ""
        token = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        if token in self.server.state.tokens or (route == MAPPING and not header):
            return False  # a public model's info needs no token (huggingface_hub asks for it without one); a bad token is refused
        message = "Invalid credentials in Authorization header" if header else "You must provide a token (Authorization: Bearer hf_...)"
        if self.server.state.echo_auth:
            message += f" (received authorization: {header})"
        self._send(401, {"error": message})
        return True

    def do_GET(self) -> None:
        route, model = self._route()
        self._record("GET", route, model, None, "")
        if self._unauthorised(route):
            return
        if route == WHOAMI:
            self._send(
                200, {"type": "user", "name": "loopback-user", "auth": {"type": "access_token", "accessToken": {"role": "fineGrained"}}}
            )
        elif route == MAPPING and model:
            self._model_info(model)
        else:
            self._send(404, {"error": f"no GET route {self.path}"})

    def _model_info(self, model: str) -> None:
        state = self.server.state
        if model in state.chat_models:
            task, providers = "conversational", ["together", "featherless-ai"]
        elif model in state.embedding_models:
            task, providers = "feature-extraction", ["hf-inference"]
        elif model in state.rerank_models:
            task, providers = "text-ranking", ["hf-inference"]
        else:  # a model on the Hub that no provider serves
            task, providers = "text-generation", []
        mapping = {p: {"status": "live", "providerId": model.lower(), "task": task} for p in providers}
        self._send(200, {"id": model, "_id": "0" * 24, "pipeline_tag": task, "inferenceProviderMapping": mapping})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode("utf-8", "replace")
        try:
            body = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = None
        route, model = self._route()
        if model is None and isinstance(body, dict):
            model = body.get("model")
        self._record("POST", route, model, body, raw)
        try:
            if self._unauthorised(route):
                return
            fault = self._fault(route, model)
            if fault and self._apply_fault(fault, route, model, body):
                return
            handler = {
                CHAT: self._chat,
                EMBED: self._embed,
                RERANK: self._rerank,
                OLLAMA_CHAT: self._ollama_chat,
                OLLAMA_SHOW: self._ollama_show,
            }.get(route)
            if handler is None:
                self._send(404, {"error": f"no route {self.path}"})
                return
            handler(model, body if isinstance(body, dict) else {}, fault)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (timeout); nothing to answer

    def _record(self, method: str, route: str, model: str | None, body: Any, raw: str) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(Recorded(method, self.path, route, model, {k.lower(): v for k, v in self.headers.items()}, body, raw))

    def _fault(self, route: str, model: str | None) -> Fault | None:
        state = self.server.state
        with state.lock:
            for fault in state.faults:
                if fault.matches(route, model):
                    fault.hits += 1
                    return fault
        return None

    def _apply_fault(self, fault: Fault, route: str, model: str | None, body: Any) -> bool:
        """Answer with the fault; False lets the normal handler run (slow replies, stream and usage faults)."""
        ollama = route.startswith("ollama")
        if fault.kind == "429":
            self._error(429, "rate limit reached", route, {"Retry-After": f"{fault.retry_after:g}"})
        elif fault.kind == "429_date":
            when = email.utils.formatdate(time.time() + fault.retry_after, usegmt=True)
            self._error(429, "rate limit reached", route, {"Retry-After": when})
        elif fault.kind == "429_ratelimit":  # IETF draft headers only, as the Hub sends them
            headers = {"RateLimit": f'"api";r=0;t={int(fault.retry_after)}', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}
            self._error(429, "rate limit reached", route, headers)
        elif fault.kind == "503":  # the legacy api-inference loading reply
            self._send(503, {"error": f"Model {model} is currently loading", "estimated_time": fault.estimated_time})
        elif fault.kind == "503_queue_full":
            self._send(503, {"error": "server busy, please try again.  maximum pending requests exceeded"})
        elif fault.kind == "500":
            self._error(500, "internal error", route)
        elif fault.kind == "malformed":
            self._send(200, None, raw=b'{"choices": [{"message": {"content": "trunc' if not ollama else b'{"message": {"role": "assist')
        else:
            if fault.kind == "slow":
                time.sleep(fault.delay)
            return False
        return True

    def _error(self, status: int, message: str, route: str, headers: dict[str, str] | None = None, **extra: Any) -> None:
        """An error body in the shape of the route's server: OpenAI-style for chat, Ollama's, TEI-style for the model routes."""
        if route == CHAT:
            payload: Any = {"error": {"message": message, "type": extra.get("type", "invalid_request_error"), "code": extra.get("code")}}
        elif route.startswith("ollama"):
            payload = {"error": message}  # Ollama's reference (docs/api/errors.mdx): the message only
        else:
            payload = {"error": message, "error_type": extra.get("type", "validation")}
        self._send(status, payload, headers)

    # ---- HF chat ----------------------------------------------------------------------------
    def _chat(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        state = self.server.state
        requested = str(model or "")
        base_model = requested.split(":", 1)[0]
        if base_model not in state.chat_models:
            message = f"The requested model '{requested}' is not supported by any provider you have enabled."
            self._error(400, message, CHAT, code="model_not_supported")
            return
        messages = body.get("messages") or []
        if base_model in state.no_system_models and any(m.get("role") == "system" for m in messages):
            if base_model in state.tgi_models:  # text-generation-inference: InferError::TemplateError is a 422
                self._send(422, {"error": "Template error: System role not supported", "error_type": "template_error"})
            else:  # vLLM-style servers: the template's exception is a 400
                self._error(400, "System role not supported", CHAT, code="invalid_request")
            return
        answer, finish = cut(canned_answer(requested, messages), body.get("max_tokens"))
        kind = fault.kind if fault else None
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(answer.split()),
            "total_tokens": prompt_tokens + len(answer.split()),
        }
        if kind == "huge_usage":
            usage = {"prompt_tokens": 10_000_000, "completion_tokens": 1_000_000, "total_tokens": 11_000_000}
        base = {"id": "cmpl-loopback", "created": int(time.time()), "model": requested, "system_fingerprint": "loopback"}
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": finish, "logprobs": None}
            reply = {**base, "object": "chat.completion", "choices": [choice]}
            if kind == "trickle":  # every read arrives within a socket timeout, the whole reply takes far longer
                self._trickle(json.dumps({**reply, "usage": usage}).encode(), fault.delay)
                return
            self._send(200, reply if kind == "no_usage" else {**reply, "usage": usage})
            return
        self._start_chunked("text/event-stream")
        end = "\r\n" if kind == "crlf" else "\n"

        def event(choices: list[dict[str, Any]], usage: Any = None) -> None:
            chunk = {**base, "object": "chat.completion.chunk", "choices": choices, "usage": usage}
            self._chunk(f"data: {json.dumps(chunk)}{end}{end}")

        self._chunk(f": keep-alive{end}{end}")  # SSE comment lines are allowed anywhere
        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}])
        if kind == "stream_error":
            self._chunk(f'data: {{"error": "model overloaded", "error_type": "overloaded"}}{end}{end}')
            self._end_chunked()
            return
        for i, word in enumerate(re.findall(r"\S+\s*", answer)):
            event([{"index": 0, "delta": {"content": word}, "finish_reason": None, "logprobs": None}])
            if kind == "stream_error_after_token" and i == 1:
                self._chunk(f'data: {{"error": "generation failed", "error_type": "generation"}}{end}{end}')
                self._end_chunked()
                return
        event([{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}])
        if kind != "no_usage" and (body.get("stream_options") or {}).get("include_usage"):
            event([], usage=usage)  # the usage-only chunk that breaks the stock class
        self._chunk(f"data: [DONE]{end}{end}")
        self._end_chunked()

    # ---- HF embeddings ----------------------------------------------------------------------
    def _embed(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        state = self.server.state
        if model not in state.embedding_models:
            self._send(404, {"error": f"Model {model} does not exist"})
            return
        inputs = body.get("inputs")
        single = isinstance(inputs, str)
        texts = [inputs] if single else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self._error(422, "Failed to deserialize the JSON body: `inputs` must be a string or a list of strings", EMBED)
            return
        if len(texts) > MAX_CLIENT_BATCH:
            self._error(413, f"batch size {len(texts)} > maximum allowed batch size {MAX_CLIENT_BATCH}", EMBED)
            return
        if model in state.token_level_models:
            out: Any = [hashed_states(text).tolist() for text in texts]
        else:
            out = [hashed_embedding(text) for text in texts]
        self._send(200, out[0] if single else out)

    # ---- HF text ranking (text-embeddings-inference /rerank) --------------------------------
    def _rerank(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        if model not in self.server.state.rerank_models:
            self._send(404, {"error": f"Model {model} does not exist"})
            return
        query, texts = body.get("query"), body.get("texts")
        if not isinstance(query, str) or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            self._error(422, "Failed to deserialize the JSON body into the target type: missing field `query` or `texts`", RERANK)
            return
        if not texts:
            self._error(400, "`texts` cannot be empty", RERANK, type="empty")
            return
        if len(texts) > MAX_CLIENT_BATCH:
            self._error(413, f"batch size {len(texts)} > maximum allowed batch size {MAX_CLIENT_BATCH}", RERANK)
            return
        raw_scores = bool(body.get("raw_scores"))
        ranks = []
        for index, text in enumerate(texts):
            logit = overlap_logit(query, text)
            ranks.append({"index": index, "score": logit if raw_scores else 1 / (1 + math.exp(-logit))})
        self._send(200, sorted(ranks, key=lambda r: -r["score"]))

    # ---- Ollama -------------------------------------------------------------------------------
    def _ollama_missing(self, model: str | None) -> bool:
        if model in self.server.state.ollama_models:
            return False
        self._send(404, {"error": f"model '{model}' not found"})
        return True

    def _ollama_chat(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        if self._ollama_missing(model):
            return
        model = str(model)
        messages = body.get("messages") or []
        answer, finish = cut(canned_answer(model, messages), (body.get("options") or {}).get("num_predict"))
        counts = {"prompt_eval_count": sum(len(str(m.get("content") or "").split()) for m in messages), "eval_count": len(answer.split())}
        created = "2026-01-01T00:00:00Z"
        if body.get("stream") is False:
            message = {"role": "assistant", "content": answer}
            self._send(200, {"model": model, "created_at": created, "message": message, "done": True, "done_reason": finish, **counts})
            return
        self._start_chunked("application/x-ndjson")
        kind = fault.kind if fault else None
        if kind == "stream_error":
            self._chunk(json.dumps({"error": "model runner stopped"}) + "\n")
            self._end_chunked()
            return
        for i, word in enumerate(re.findall(r"\S+\s*", answer)):
            self._chunk(
                json.dumps({"model": model, "created_at": created, "message": {"role": "assistant", "content": word}, "done": False}) + "\n"
            )
            if kind == "stream_error_after_token" and i == 1:
                self._chunk(json.dumps({"error": "model runner stopped"}) + "\n")
                self._end_chunked()
                return
        last = {"model": model, "created_at": created, "message": {"role": "assistant", "content": ""}, "done": True}
        self._chunk(json.dumps({**last, "done_reason": finish, **counts}) + "\n")
        self._end_chunked()

    def _ollama_show(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        if self._ollama_missing(model):
            return
        self._send(
            200,
            {
                "modelfile": "",
                "parameters": "",
                "template": "",
                "details": {"format": "gguf", "family": "llama"},
                "model_info": {"llama.context_length": 8192},
                "capabilities": ["completion"],
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: LoopbackState

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that timed out closed its keep-alive connection: expected in fault tests
        super().handle_error(request, client_address)


class LoopbackServer:
    """Start with :meth:`start`; ``url`` is the base to give as ``hf_base_url`` / Ollama ``base_url``."""

    def __init__(self) -> None:
        self.state = LoopbackState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        with self.state.lock:
            fresh = LoopbackState()
            for name in ("requests", "faults", "tokens", "chat_models", "no_system_models", "tgi_models", "embedding_models",
                         "rerank_models", "ollama_models", "token_level_models"):  # fmt: skip
                setattr(self.state, name, getattr(fresh, name))
            self.state.echo_auth = False

    def add_fault(self, route: str, kind: str, model: str | None = None, times: int | None = None, **params: float) -> Fault:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; choose one of {FAULT_KINDS}")
        fault = Fault(route=route, kind=kind, model=model, times=times, **params)
        with self.state.lock:
            self.state.faults.append(fault)
        return fault

    def requests(self, route: str | None = None) -> list[Recorded]:
        with self.state.lock:
            return [r for r in self.state.requests if route is None or r.route == route]


def refused_url() -> str:
    """A loopback URL on a free port where nothing listens (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
