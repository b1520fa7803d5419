"""LocalCrossEncoderRerank with a real ONNX model of known behaviour, the packaged all-MiniLM tokenizer, and real nodes.

No cross-encoder weights are available offline, so the test model is built here
with the onnx package: its logit is the number of passage word pieces that also
occur in the question, computed from the pair's input_ids, attention_mask and
token_type_ids exactly as a BERT cross-encoder receives them. Sorting by it checks
the pair encoding, batching, the ONNX run and the score conversion.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from app.composition import build_reranker
from integrations.adapters.local_embedding import _model_files
from integrations.adapters.local_rerank import LocalCrossEncoderRerank
from integrations.question_context import question_context
from settings import load_settings

QUESTION = "How do I set the proxy timeout?"
PASSAGES = [
    "The widget daemon starts at boot.",  # fused first, shares nothing with the question
    "Logs rotate every night.",
    "Set the proxy timeout with proxy.timeout in seconds.",  # the most overlap: reranked first
    "The proxy listens on port 8080.",
]


def overlap_model(path: Path, labels: int = 1) -> Path:
    """An ONNX "cross-encoder" whose logit is (passage word pieces found in the question) - 3."""
    import onnx
    from onnx import TensorProto, helper

    def const(name: str, value: list, dtype=TensorProto.INT64) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, dtype, [len(value)], value))

    nodes = [
        const("ax1", [1]),
        const("ax2", [2]),
        const("one", [1]),
        const("three", [3.0], TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["input_ids", "ax2"], ["ids_q"]),  # [B, T, 1]
        helper.make_node("Unsqueeze", ["input_ids", "ax1"], ["ids_p"]),  # [B, 1, T]
        helper.make_node("Equal", ["ids_q", "ids_p"], ["same"]),
        helper.make_node("Cast", ["same"], ["same_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "token_type_ids"], ["segment_a"]),
        helper.make_node("Mul", ["segment_a", "attention_mask"], ["q_mask"]),
        helper.make_node("Mul", ["token_type_ids", "attention_mask"], ["p_mask"]),
        helper.make_node("Cast", ["q_mask"], ["q_mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["p_mask"], ["p_mask_f"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["q_mask_f", "ax2"], ["q_col"]),
        helper.make_node("Unsqueeze", ["p_mask_f", "ax1"], ["p_row"]),
        helper.make_node("Mul", ["same_f", "q_col"], ["in_q"]),
        helper.make_node("Mul", ["in_q", "p_row"], ["pairs"]),
        helper.make_node("ReduceMax", ["pairs"], ["found"], axes=[1], keepdims=0),  # [B, T]: passage piece occurs in the question
        helper.make_node("ReduceSum", ["found", "ax1"], ["count"], keepdims=1),  # [B, 1]
        helper.make_node("Sub", ["count", "three"], ["logit"]),
    ]
    if labels == 2:
        nodes += [helper.make_node("Neg", ["logit"], ["negative"]), helper.make_node("Concat", ["negative", "logit"], ["logits"], axis=1)]
    else:
        nodes += [helper.make_node("Identity", ["logit"], ["logits"])]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "tokens"]) for n in ("input_ids", "attention_mask", "token_type_ids")
    ]
    output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", labels])
    model = helper.make_model(helper.make_graph(nodes, "overlap", inputs, [output]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.mkdir(parents=True, exist_ok=True)
    (path / "onnx").mkdir(exist_ok=True)
    onnx.save(model, str(path / "onnx" / "model.onnx"))  # the Hugging Face repository layout
    shutil.copy(_model_files()[1], path / "tokenizer.json")
    return path


def fused(passages: list[str]) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=text, id_=f"n{i}"), score=1.0 / (i + 1)) for i, text in enumerate(passages)]


@pytest.mark.parametrize("labels", [1, 2])
def test_local_cross_encoder_orders_passages_by_the_models_scores(tmp_path: Path, labels: int) -> None:
    reranker = LocalCrossEncoderRerank(model_dir=overlap_model(tmp_path / "ce", labels), top_n=2, batch_size=3)
    with question_context() as context:
        ranked = reranker.postprocess_nodes(fused(PASSAGES), query_bundle=QueryBundle(QUESTION))
    assert [n.node.get_content() for n in ranked] == [PASSAGES[2], PASSAGES[3]]
    assert 0.0 < ranked[1].score < ranked[0].score < 1.0 and context.notices == []
    scores = np.array([n.score for n in ranked])
    counts = np.log(scores / (1 - scores)) / labels + 3  # sigmoid(count - 3), or softmax over (3 - count, count - 3)
    assert np.allclose(counts, np.round(counts), atol=1e-4) and counts[1] >= 3  # "the", "proxy" and the [SEP] piece


def test_settings_build_the_local_reranker_and_a_missing_model_is_a_start_up_error(tmp_path: Path) -> None:
    model_dir = overlap_model(tmp_path / "ce")
    reranker = build_reranker(load_settings("local", rerank={"backend": "local", "model_dir": str(model_dir)}, retrieval={"top_k": 3}))
    assert isinstance(reranker, LocalCrossEncoderRerank) and reranker.top_n == 3
    with pytest.raises(ValueError, match=r"rerank\.model_dir"):
        build_reranker(load_settings("local", rerank={"backend": "local"}))
    (model_dir / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=r"has no tokenizer\.json"):
        build_reranker(load_settings("local", rerank={"backend": "local", "model_dir": str(model_dir)}))


def test_a_model_that_cannot_run_keeps_the_fused_order_with_a_notice(tmp_path: Path) -> None:
    model_dir = overlap_model(tmp_path / "ce")
    (model_dir / "onnx" / "model.onnx").write_bytes(b"not an onnx model")
    reranker = LocalCrossEncoderRerank(model_dir=model_dir, top_n=2)
    with question_context() as context:
        ranked = reranker.postprocess_nodes(fused(PASSAGES), query_bundle=QueryBundle(QUESTION))
    assert [n.node.get_content() for n in ranked] == PASSAGES[:2]
    [notice] = context.notices
    assert notice.startswith("Reranking with cross-encoder/ms-marco-MiniLM-L6-v2 failed (")
    assert "the fused retrieval order was kept" in notice


def test_the_query_engine_reranks_with_the_local_model_named_in_settings(tmp_path: Path) -> None:
    from app.composition import build_ingestor, build_query_engine, open_runtime

    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(PASSAGES):
        (docs / f"note{i}.md").write_text(f"# Note {i}\n\n{text}\n")
    settings = load_settings(
        "local",
        storage={"index_dir": str(tmp_path / "index")},
        rerank={"backend": "local", "model_dir": str(overlap_model(tmp_path / "ce"))},
        retrieval={"top_k": 2},
    )
    runtime = open_runtime(settings)
    try:
        ingestor = build_ingestor(runtime)
        ingestor.ingest(docs)
        ingestor.close()
        response = build_query_engine(runtime=runtime).query(QUESTION)
    finally:
        runtime.close()
    assert [n.node.metadata["source"] for n in response.source_nodes] == ["note2.md", "note3.md"]
    scores = np.array([n.score for n in response.source_nodes])
    counts = np.log(scores / (1 - scores)) + 3
    assert np.allclose(counts, np.round(counts), atol=1e-4)  # the model's scores, not the fused ones
    assert "[1]" in response.response
