"""HFCrossEncoderRerank against the loopback cross-encoder route: batching, normalisation, cost controls, failures."""

from __future__ import annotations

import math

import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from integrations.adapters.hf_rerank import HFCrossEncoderRerank
from integrations.question_context import question_context
from tests.conftest_hf import FAKE_TOKEN
from tests.loopback_server import overlap_logit

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


def test_the_text_ranking_contract_query_and_texts_in_one_request(loopback) -> None:
    given = candidates()
    before = [(n.node.node_id, n.score) for n in given]
    out = make(loopback.url).postprocess_nodes(given, query_bundle=QueryBundle(QUESTION))
    [request] = loopback.requests("rerank")
    assert request.path == f"/hf-inference/models/{MODEL}"
    assert request.body["query"] == QUESTION and len(request.body["texts"]) == 8
    assert request.body["texts"][-1].startswith("The widget waits")
    assert request.headers["authorization"] == f"Bearer {FAKE_TOKEN}"
    assert out[0].node.node_id == "best" and len(out) == 3
    assert all(0.0 <= n.score <= 1.0 for n in out)
    assert [(n.node.node_id, n.score) for n in given] == before  # the caller's list and scores are untouched
    assert not any(o is g for o in out for g in given)


def test_scores_are_read_by_index_not_by_position(loopback) -> None:
    """The reply is sorted by score: read positionally, the best score would land on the first (unrelated) passage."""
    out = make(loopback.url, top_n=7).postprocess_nodes(candidates(), query_str=QUESTION)
    expected = {n.node.node_id: 1 / (1 + math.exp(-overlap_logit(QUESTION, n.node.get_content()))) for n in candidates()}
    assert out[0].node.node_id == "best"
    assert all(n.score == pytest.approx(expected[n.node.node_id]) for n in out)


def test_more_than_32_candidates_go_in_requests_of_at_most_32(loopback) -> None:
    out = make(loopback.url, max_candidates=40).postprocess_nodes(candidates(40), query_str=QUESTION)
    assert [len(r.body["texts"]) for r in loopback.requests("rerank")] == [32, 8] and out[0].node.node_id == "best"


def test_at_most_max_candidates_are_scored(loopback) -> None:
    make(loopback.url, max_candidates=5).postprocess_nodes(candidates(30), query_str=QUESTION)
    assert len(loopback.requests("rerank")[0].body["texts"]) == 5


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


@pytest.mark.parametrize("fault", ["503", "500", "slow", "malformed", "refused", "429_ratelimit", "unknown_model", "bad_token"])
def test_api_failure_keeps_the_fused_order_and_says_so(loopback, refused, fault) -> None:
    url = refused if fault == "refused" else loopback.url
    if fault == "unknown_model":
        loopback.state.rerank_models.clear()
    elif fault == "bad_token":
        loopback.state.tokens.clear()
    elif fault != "refused":
        loopback.add_fault("rerank", kind=fault, delay=2.0)
    rerank = make(url, timeout_s=0.3)
    given = candidates()
    with question_context() as context:
        out = rerank.postprocess_nodes(given, query_str=QUESTION)
    assert [n.node.node_id for n in out] == [n.node.node_id for n in given[:3]]
    [notice] = context.notices
    assert MODEL in notice and "fused retrieval order was kept" in notice and FAKE_TOKEN not in notice
    loopback.reset()
    if fault != "refused":
        with question_context() as next_question:
            rerank.postprocess_nodes(candidates(), query_str=QUESTION)
        assert next_question.notices == []  # the notice belongs to one question


@pytest.mark.parametrize(
    "reply",
    [
        [[{"label": "LABEL_0", "score": 0.9}]] * 8,  # the old text-classification shape
        [{"index": 9, "score": 0.9}],  # an index outside the request
        [{"index": i, "score": "high"} for i in range(8)],
        {"error": "unexpected"},
    ],
)
def test_a_reply_that_is_not_one_index_and_score_per_passage_keeps_the_fused_order(reply) -> None:
    rerank = make("http://127.0.0.1:9")
    with pytest.raises(Exception, match="not one"):
        rerank._scores_by_index(reply, 8)


def test_a_malformed_body_is_rejected_by_the_fake_like_the_real_server(loopback) -> None:
    """The fake says no to the old text-classification body, as text-embeddings-inference does (422)."""
    from huggingface_hub.utils import get_session

    old_body = {"inputs": [{"text": QUESTION, "text_pair": "x"}], "parameters": {"function_to_apply": "sigmoid"}}
    reply = get_session().post(
        f"{loopback.url}/hf-inference/models/{MODEL}", json=old_body, headers={"authorization": f"Bearer {FAKE_TOKEN}"}
    )
    assert reply.status_code == 422
