"""HFCrossEncoderRerank against the loopback cross-encoder route: batching, normalisation, cost controls, failures."""

from __future__ import annotations

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from integrations.hf_rerank import HFCrossEncoderRerank
from tests.conftest_hf import FAKE_TOKEN

MODEL = "cross-encoder/ms-marco-MiniLM-L6-v2"
QUESTION = "how long does the widget wait for a reply"


def candidates(count: int = 8) -> list[NodeWithScore]:
    """Fused order puts the best passage last."""
    nodes = [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=f"Unrelated passage number {i} about colours."), score=1.0 - i / 100)
        for i in range(count - 1)
    ]
    best = TextNode(id_="best", text="The widget waits for a reply for 30 seconds; how long is set by --timeout.")
    return [*nodes, NodeWithScore(node=best, score=0.1)]


def make(url: str, **kwargs) -> HFCrossEncoderRerank:
    return HFCrossEncoderRerank(model=MODEL, token=FAKE_TOKEN, base_url=url, **{"top_n": 3, "timeout_s": 1.0, **kwargs})


def test_all_pairs_in_one_request_and_new_nodes_returned(loopback) -> None:
    given = candidates()
    before = [(n.node.node_id, n.score) for n in given]
    out = make(loopback.url).postprocess_nodes(given, query_bundle=QueryBundle(QUESTION))
    [request] = loopback.requests("rerank")
    assert request.path == f"/hf-inference/models/{MODEL}"
    assert len(request.body["inputs"]) == 8 and request.body["inputs"][0]["text"] == QUESTION
    assert request.body["inputs"][-1]["text_pair"].startswith("The widget waits")
    assert request.headers["authorization"] == f"Bearer {FAKE_TOKEN}"
    assert out[0].node.node_id == "best" and len(out) == 3
    assert all(0.0 <= n.score <= 1.0 for n in out)
    assert [(n.node.node_id, n.score) for n in given] == before  # the caller's list and scores are untouched
    assert not any(o is g for o in out for g in given)


def test_logits_are_squashed_to_probabilities(loopback) -> None:
    out = make(loopback.url, function_to_apply="none").postprocess_nodes(candidates(), query_str=QUESTION)
    assert out[0].node.node_id == "best" and all(0.0 < n.score < 1.0 for n in out)


def test_at_most_max_candidates_are_scored(loopback) -> None:
    make(loopback.url, max_candidates=5).postprocess_nodes(candidates(30), query_str=QUESTION)
    assert len(loopback.requests("rerank")[0].body["inputs"]) == 5


def test_no_call_when_the_retriever_returned_top_n_or_fewer(loopback) -> None:
    given = candidates(3)
    out = make(loopback.url).postprocess_nodes(given, query_str=QUESTION)
    assert loopback.requests() == [] and [n.node.node_id for n in out] == [n.node.node_id for n in given]


def test_scores_are_cached_per_model_question_and_node(loopback) -> None:
    rerank = make(loopback.url)
    first = rerank.postprocess_nodes(candidates(), query_str=QUESTION)
    second = rerank.postprocess_nodes(candidates(), query_str=QUESTION)
    assert len(loopback.requests("rerank")) == 1
    assert [(n.node.node_id, n.score) for n in first] == [(n.node.node_id, n.score) for n in second]
    rerank.postprocess_nodes(candidates(), query_str="another question")
    assert len(loopback.requests("rerank")) == 2


@pytest.mark.parametrize("fault", ["503", "500", "slow", "malformed", "refused"])
def test_api_failure_keeps_the_fused_order_and_says_so(loopback, refused, fault) -> None:
    url = refused if fault == "refused" else loopback.url
    if fault != "refused":
        loopback.add_fault("rerank", kind=fault, delay=2.0)
    rerank = make(url, timeout_s=0.3)
    given = candidates()
    out = rerank.postprocess_nodes(given, query_str=QUESTION)
    assert [n.node.node_id for n in out] == [n.node.node_id for n in given[:3]]
    assert rerank.last_notice and MODEL in rerank.last_notice and "fused retrieval order was kept" in rerank.last_notice
    assert FAKE_TOKEN not in rerank.last_notice
    loopback.reset()
    rerank.postprocess_nodes(candidates(), query_str=QUESTION) if fault != "refused" else None
    if fault != "refused":
        assert rerank.last_notice is None  # the notice belongs to one question
