"""A node postprocessor that drops every node when the evidence is too weak to answer from (docs/asking.md).

Like ``SimilarityPostprocessor``, but judged on the whole question's best cosine over the index (the question
context), with a stricter threshold when the question names something no passage contains."""

from __future__ import annotations

from llama_index.core.bridge.pydantic import Field
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import NodeWithScore, QueryBundle

from integrations.question_context import current_question


def missing_names_notice(names: list[str]) -> str:
    return f"No passage in the documents mentions {', '.join(names)}."


class WeakEvidenceFilter(BaseNodePostprocessor):
    """Keep the nodes when the question is close enough to the index, else drop them all."""

    min_dense_score: float | None = Field(
        default=0.44, description="Below this best cosine similarity the docs are said not to cover the question; None disables."
    )
    min_dense_score_missing_names: float | None = Field(
        default=0.55, description="The same for a question naming something no passage contains; None disables."
    )

    @classmethod
    def class_name(cls) -> str:
        return "WeakEvidenceFilter"

    def _postprocess_nodes(self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None) -> list[NodeWithScore]:
        context = current_question()
        context.evidence_checked = True
        if context.missing_names:
            context.notice(missing_names_notice(context.missing_names))
        thresholds = [self.min_dense_score]
        if context.missing_names:
            thresholds.append(self.min_dense_score_missing_names)
        best = context.dense_score
        if not nodes or (best is not None and any(t is not None and best < t for t in thresholds)):
            context.weak_evidence = True
            return []
        return nodes
