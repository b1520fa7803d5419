"""A loopback server speaking the Hugging Face router and Ollama routes the app uses (GUIDE §3).

Stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive (``Content-Length`` on
every reply, chunked transfer for streams), so client bugs that only show on
keep-alive connections show here too.

Routes:
- ``POST /v1/chat/completions``: chat completion, JSON or SSE (``stream: true``) ending with a
  usage-only chunk (``choices: []``) and ``data: [DONE]``;
- ``POST /hf-inference/models/{id}/pipeline/feature-extraction``: real all-MiniLM-L6-v2 vectors
  from the packaged ONNX embedder (pooled and normalised, or token-level for models listed in
  ``token_level_models``);
- ``POST /hf-inference/models/{id}``: cross-encoder scores from word overlap (deterministic);
- ``POST /api/chat`` (JSON or NDJSON stream) and ``POST /api/show`` (Ollama).

Every request is recorded (path, lower-cased headers, JSON body). Faults are injected per route
and model with :meth:`LoopbackServer.add_fault`; ``no_usage`` answers a chat without its ``usage`` field.
"""

from __future__ import annotations

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

CHAT, EMBED, RERANK, OLLAMA_CHAT, OLLAMA_SHOW = "chat", "embed", "rerank", "ollama_chat", "ollama_show"
FAULT_KINDS = ("429", "503", "slow", "malformed", "stream_error", "stream_error_after_token", "500", "no_usage")
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


def overlap_logit(query: str, doc: str) -> float:
    q = {w.lower() for w in _WORD.findall(query)}
    d = {w.lower() for w in _WORD.findall(doc)}
    if not q:
        return -5.0
    return 10.0 * len(q & d) / len(q) - 5.0


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
        return "unknown", None

    def do_GET(self) -> None:
        self._record("GET", "unknown", None, None, "")
        self._send(404, {"error": f"no GET route {self.path}"})

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
        fault = self._fault(route, model)
        try:
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
            handler(model, body or {}, fault)
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
        """Answer with the fault; False lets the normal handler run (slow replies, stream faults)."""
        ollama = route.startswith("ollama")
        if fault.kind == "429":
            self._send(429, {"error": "rate limit reached"}, {"Retry-After": f"{fault.retry_after:g}"})
            return True
        if fault.kind == "503":
            self._send(503, {"error": f"Model {model} is currently loading", "estimated_time": fault.estimated_time})
            return True
        if fault.kind == "500":
            self._send(500, {"error": "internal error"})
            return True
        if fault.kind == "malformed":
            self._send(200, None, raw=b'{"choices": [{"message": {"content": "trunc' if not ollama else b'{"message": {"role": "assist')
            return True
        if fault.kind == "slow":
            time.sleep(fault.delay)
            return False
        return False  # stream faults act inside the stream handlers

    # ---- HF chat ----------------------------------------------------------------------------
    def _chat(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        model = model or "unknown"
        messages = body.get("messages") or []
        answer = canned_answer(model, messages)
        prompt_tokens = sum(len(str(m.get("content") or "").split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(answer.split()),
            "total_tokens": prompt_tokens + len(answer.split()),
        }
        base = {"id": "cmpl-loopback", "created": int(time.time()), "model": model, "system_fingerprint": "loopback"}
        kind = fault.kind if fault else None
        if not body.get("stream"):
            choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop", "logprobs": None}
            reply = {**base, "object": "chat.completion", "choices": [choice]}
            self._send(200, reply if kind == "no_usage" else {**reply, "usage": usage})
            return
        self._start_chunked("text/event-stream")

        def event(choices: list[dict[str, Any]], **extra: Any) -> None:
            self._chunk("data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": choices, **extra}) + "\n\n")

        event([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None, "logprobs": None}])
        if kind == "stream_error":
            self._chunk('data: {"error": "model overloaded", "error_type": "overloaded"}\n\n')
            self._end_chunked()
            return
        for i, word in enumerate(re.findall(r"\S+\s*", answer)):
            event([{"index": 0, "delta": {"content": word}, "finish_reason": None, "logprobs": None}])
            if kind == "stream_error_after_token" and i == 1:
                self._chunk('data: {"error": "generation failed", "error_type": "generation"}\n\n')
                self._end_chunked()
                return
        event([{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}])
        if kind != "no_usage":
            event([], usage=usage)  # the usage-only chunk that breaks the stock class
        self._chunk("data: [DONE]\n\n")
        self._end_chunked()

    # ---- HF embeddings ----------------------------------------------------------------------
    def _embed(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        inputs = body.get("inputs")
        single = isinstance(inputs, str)
        texts = [inputs] if single else list(inputs or [])
        embedder = self.server.embedder
        if model in self.server.state.token_level_models:
            out: Any = [token_states(embedder, text).tolist() for text in texts]
        else:
            out = embedder.get_text_embedding_batch(texts)
        self._send(200, out[0] if single else out)

    # ---- HF cross-encoder -------------------------------------------------------------------
    def _rerank(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        pairs = body.get("inputs") or []
        function = (body.get("parameters") or {}).get("function_to_apply", "none")
        out = []
        for pair in pairs:
            logit = overlap_logit(pair.get("text", ""), pair.get("text_pair", ""))
            score = 1 / (1 + math.exp(-logit)) if function == "sigmoid" else logit
            out.append([{"label": "LABEL_0", "score": score}])
        self._send(200, out)

    # ---- Ollama -------------------------------------------------------------------------------
    def _ollama_chat(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
        model = model or "unknown"
        messages = body.get("messages") or []
        answer = canned_answer(model, messages)
        counts = {"prompt_eval_count": sum(len(str(m.get("content") or "").split()) for m in messages), "eval_count": len(answer.split())}
        created = "2026-01-01T00:00:00Z"
        if body.get("stream") is False:
            self._send(
                200,
                {
                    "model": model,
                    "created_at": created,
                    "message": {"role": "assistant", "content": answer},
                    "done": True,
                    "done_reason": "stop",
                    **counts,
                },
            )
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
        last = {
            "model": model,
            "created_at": created,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            **counts,
        }
        self._chunk(json.dumps(last) + "\n")
        self._end_chunked()

    def _ollama_show(self, model: str | None, body: dict[str, Any], fault: Fault | None) -> None:
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


def token_states(embedder: Any, text: str) -> np.ndarray:
    """Token-level last_hidden_state of one text from the packaged ONNX model (no padding)."""
    embedder.load()
    encoding = embedder._tokenizer.encode(text)
    ids = np.asarray([encoding.ids], dtype=np.int64)
    mask = np.asarray([encoding.attention_mask], dtype=np.int64)
    hidden = embedder._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    return hidden[0]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: LoopbackState
    embedder: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # a client that timed out closed its keep-alive connection: expected in fault tests
        super().handle_error(request, client_address)


class LoopbackServer:
    """Start with :meth:`start`; ``url`` is the base to give as ``hf_base_url`` / Ollama ``base_url``."""

    def __init__(self, embedder: Any) -> None:
        self.state = LoopbackState()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = self.state
        self._server.embedder = embedder
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
            self.state.requests.clear()
            self.state.faults.clear()
            self.state.token_level_models.clear()

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
