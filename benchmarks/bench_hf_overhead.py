"""What our HF wrappers cost on top of the HTTP they send, measured against the loopback test server.

1. Answer overhead per question: FallbackLLM → HFChatLLM → huggingface_hub versus the same
   request sent raw with httpx2 on the same keep-alive session (p50 of the paired differences,
   target ≤ 20 ms), for complete and streamed answers.
2. Embedding requests for the ORD-QA docs through the API path (the app's Ingestor with the
   hf_api profile): target ceil(chunks / batch size) per ingest step, and 0 when the same
   texts are ingested again into a fresh index (embedding cache).
3. Reranker latency for 20 candidates (one batched request; cached and uncached).

Run: .venv/bin/python benchmarks/bench_hf_overhead.py [--questions 60]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ORD_QA_DOCS = REPO / "eval" / "ord-qa" / "docs"
FAKE_TOKEN = "hf_bench_token_not_real"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def answer_overhead(server, questions: int) -> list[tuple[str, float, float, float]]:
    from huggingface_hub.utils import get_session
    from llama_index.core.schema import TextNode

    from integrations.adapters.hf_chat_llm import HFChatLLM
    from integrations.adapters.hf_http import chat_url, hf_headers
    from integrations.citation_prompt import build_messages
    from integrations.fallback_llm import FallbackLLM

    model = "Qwen/Qwen2.5-7B-Instruct-1M"
    hf = HFChatLLM(model_name=model, token=FAKE_TOKEN, base_url=server.url, timeout=30, num_output=512)
    llm = FallbackLLM(members=[hf], deadline_s=60)
    nodes = [TextNode(text=f"Passage {i}: " + "The global router assigns routing guides to each net. " * 20) for i in range(5)]
    session, url, headers = get_session(), chat_url(server.url), hf_headers(hf._token)
    rows = []
    for stream in (False, True):
        raw_ms, wrapped_ms, diffs = [], [], []
        for i in range(questions + 5):
            messages = build_messages(f"Question {i}: how are routing guides assigned?", nodes)
            body = {
                "model": model,
                "messages": [{"role": m.role.value, "content": m.content} for m in messages],
                "max_tokens": 512,
                "temperature": 0.1,
                "stream": stream,
            }
            t0 = time.perf_counter()
            if stream:
                with session.stream("POST", url, json=body, headers=headers, timeout=30) as response:
                    text = "".join(
                        (json.loads(line[5:]).get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                        for line in response.iter_lines()
                        if line.startswith("data:") and line.strip() != "data: [DONE]"
                    )
            else:
                text = session.post(url, json=body, headers=headers, timeout=30).json()["choices"][0]["message"]["content"]
            t1 = time.perf_counter()
            answer = "".join(c.delta or "" for c in llm.stream_chat(messages)) if stream else llm.chat(messages).message.content
            t2 = time.perf_counter()
            assert text and answer, "empty answer"
            if i >= 5:  # warm-up
                raw_ms.append((t1 - t0) * 1000)
                wrapped_ms.append((t2 - t1) * 1000)
                diffs.append((t2 - t1 - (t1 - t0)) * 1000)
        rows.append(
            ("stream" if stream else "complete", statistics.median(raw_ms), statistics.median(wrapped_ms), statistics.median(diffs))
        )
    return rows


def embedding_requests(server, work: Path) -> dict[str, int]:
    from app.composition import build_ingestor, open_runtime
    from settings import load_settings

    os.environ["HF_TOKEN"] = FAKE_TOKEN
    cache = work / "embedding_cache.sqlite"
    batch = 32
    out: dict[str, int] = {"batch_size": batch}

    def ingest(index: str) -> tuple[int, int, int]:
        settings = load_settings(
            "hf_api",
            hf_base_url=server.url,
            storage={"index_dir": str(work / index)},
            embedding={"cache_path": str(cache), "batch_size": batch},
        )
        before = len(server.requests("embed"))
        runtime = open_runtime(settings)
        try:
            ingestor = build_ingestor(runtime)
            report = ingestor.ingest(ORD_QA_DOCS)
            ingestor.close()
            stats = runtime.embed_model.stats
            hits = stats["cache_hits"] + stats["duplicates"]
        finally:
            runtime.close()
        sent = server.requests("embed")[before:]
        return report.chunks_written, len(sent), hits

    chunks, requests, hits = ingest("index_a")
    texts = sum(len(r.body["inputs"]) for r in server.requests("embed"))
    out.update(chunks=chunks, texts_sent=texts, repeated_texts_not_resent=hits, requests_first=requests, target=math.ceil(chunks / batch))
    out["requests_fresh_index_same_cache"] = ingest("index_b")[1]
    out["requests_unchanged_rerun"] = ingest("index_a")[1]
    return out


def rerank_latency(server, runs: int) -> dict[str, float]:
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    from integrations.adapters.hf_rerank import HFCrossEncoderRerank

    nodes = [
        NodeWithScore(
            node=TextNode(text=f"Candidate {i}: detailed placement legalises cells after global placement. " * 6), score=1 / (i + 1)
        )
        for i in range(20)
    ]
    uncached = HFCrossEncoderRerank(token=FAKE_TOKEN, base_url=server.url, top_n=5, max_candidates=20, cache_size=0)
    cached = HFCrossEncoderRerank(token=FAKE_TOKEN, base_url=server.url, top_n=5, max_candidates=20)
    times, hits = [], []
    for i in range(runs + 3):
        t0 = time.perf_counter()
        uncached.postprocess_nodes(nodes, query_bundle=QueryBundle(f"how does detailed placement legalise cells {i}?"))
        t1 = time.perf_counter()
        cached.postprocess_nodes(nodes, query_bundle=QueryBundle("how does detailed placement legalise cells?"))
        t2 = time.perf_counter()
        if i >= 3:
            times.append((t1 - t0) * 1000)
            hits.append((t2 - t1) * 1000)
    return {"p50_ms": statistics.median(times), "p95_ms": pct(times, 0.95), "cached_p50_ms": statistics.median(hits)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=60)
    parser.add_argument("--rerank-runs", type=int, default=30)
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    for noisy in ("pymilvus", "milvus_lite", "grpc._server"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    from tests.loopback_server import LoopbackServer

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["HF_HOME"] = str(Path(tmp) / "hf_home")  # never read a developer's saved token
        server = LoopbackServer().start()
        try:
            overhead = answer_overhead(server, args.questions)
            embeds = embedding_requests(server, Path(tmp))
            rerank = rerank_latency(server, args.rerank_runs)
        finally:
            server.stop()

    print(f"\nAnswer overhead per question ({args.questions} questions, loopback server, p50)")
    print(f"{'mode':<10}{'raw HTTP ms':>14}{'wrapped ms':>14}{'overhead ms':>14}{'target':>10}")
    for mode, raw, wrapped, diff in overhead:
        print(f"{mode:<10}{raw:>14.2f}{wrapped:>14.2f}{diff:>14.2f}{'<= 20':>10}")
    print(f"\nEmbedding requests, ORD-QA docs ({ORD_QA_DOCS.name}: 32 files) through the HF API path")
    for key, value in embeds.items():
        print(f"  {key:<34}{value:>8}")
    print("\nReranker, 20 candidates, one batched request")
    for key, value in rerank.items():
        print(f"  {key:<34}{value:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
