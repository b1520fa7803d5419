"""Hits grow into their section (span decided at ingestion) or a window of their piece; a question costs two searches."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.composition import build_retriever
from integrations.section_context import CONTEXT_KEY, enclosing_section, quoted_section, section_spans
from tests.test_ingestion import write

OPTIONS = (
    """# Router guide

## Set routing layers

Use `set_routing_layers -signal met2-met9` to choose the layers that global routing may use.

### Options

| option | meaning |
|---|---|
| `-signal` | the range of layers for signal nets |
| `-clock` | the range of layers for clock nets |

### Examples

`set_routing_layers -signal met2-met5 -clock met6-met9` keeps clocks on the upper layers.

## Unrelated chapter

Tapeout checklists live in another manual. """
    + "Sign-off needs timing, power and DRC reports. " * 30
    + "\n"
)


def test_small_subsections_join_their_parent_section_and_big_ones_stand_alone() -> None:
    sections = ["Guide", "Guide > Layers", "Guide > Layers > Options", "Guide > Layers > Examples", "Guide > Other", ""]
    texts = ["intro " * 5, "layers " * 40, "options " * 40, "examples " * 40, "other " * 300, "preface " * 10]
    spans = section_spans(sections, texts, budget=250)
    assert spans[1:4] == ["1-3", "1-3", "1-3"], "the Layers section (120 words) is shown whole from any of its parts"
    assert spans[0] is None, "the whole guide is over budget and the title piece has no smaller section than the guide"
    assert spans[4] is None, "a 300-word section is over budget: shown as a window of its chunks"
    assert spans[5] is None, "text before any heading has no section"


def test_hit_in_a_subsection_is_shown_with_its_whole_section(ingestor, runtime, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "router.md", OPTIONS)
    ingestor.ingest(docs)
    nodes = build_retriever(runtime).retrieve("which layers can clock nets use")
    top = nodes[0].node
    assert top.metadata["section"].startswith("Router guide > Set routing layers")
    text = top.get_content()
    for part in ("Use `set_routing_layers -signal met2-met9`", "the range of layers for clock nets", "keeps clocks on the upper layers"):
        assert part in text, (part, text)
    assert "Tapeout" not in text, "the next chapter is not part of the section"
    assert CONTEXT_KEY not in top.get_content(metadata_mode="llm"), "the span is bookkeeping, not shown to the LLM"


def test_editing_a_neighbour_updates_the_unchanged_pieces_span(ingestor, runtime, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "router.md", OPTIONS)
    ingestor.ingest(docs)
    long_examples = "### Examples\n\n" + " ".join(f"Example {n} routes net{n} on met{n % 9 + 1}." for n in range(80)) + "\n"
    write(docs / "router.md", OPTIONS.replace(OPTIONS[OPTIONS.index("### Examples") : OPTIONS.index("## Unrelated")], long_examples + "\n"))
    report = ingestor.ingest(docs)
    assert report.ingested == ["router.md"]
    nodes = build_retriever(runtime).retrieve("which layers can clock nets use")
    top = nodes[0].node
    assert "the range of layers for clock nets" in top.get_content()
    assert "Example 40 routes" not in top.get_content(), "the grown Examples section no longer fits the budget"


def test_hit_in_a_long_section_is_shown_with_neighbouring_chunks_in_order(ingestor, runtime, tmp_path: Path) -> None:
    sentences = [f"Step {n} of the flow configures parameter p{n} to the value {n * 7}." for n in range(200)]
    write(tmp_path / "docs" / "flow.md", "# Flow\n\n" + " ".join(sentences) + "\n")
    ingestor.ingest(tmp_path / "docs")
    nodes = build_retriever(runtime).retrieve("parameter p100 value 700")
    text = nodes[0].node.get_content()
    assert "p100 to the value 700" in text
    found = [n for n in range(200) if f"Step {n} of" in text]
    assert len(found) > 5 and found == list(range(found[0], found[-1] + 1)), "a contiguous window, overlap shown once"
    assert len(text.split()) <= 300


@pytest.mark.parametrize("question", ["How do I set routing layers for clocks, and how do I keep clocks on upper layers?"])
def test_a_question_costs_one_embedding_and_two_searches(
    ingestor, runtime, tmp_path: Path, embedding_calls: list[int], question: str
) -> None:
    write(tmp_path / "docs" / "router.md", OPTIONS)
    ingestor.ingest(tmp_path / "docs")
    client = runtime.store.client
    searches: list[int] = []
    search = client.search

    def counting_search(*args, **kwargs):
        searches.append(len(kwargs["data"]))
        return search(*args, **kwargs)

    client.search = counting_search
    embedding_calls.clear()
    try:
        nodes = build_retriever(runtime).retrieve(question)
    finally:
        client.search = search
    assert nodes
    assert embedding_calls == [1], "the question is embedded once"
    assert searches == [1, 1], "one dense request and one BM25 request for the whole question (it is not split into parts)"


def test_quotes_from_a_context_spanning_sections_are_labelled_with_their_own_section() -> None:
    paths = ["Gateway", "Gateway > Port", "Gateway > Restarting", "Gateway > Restarting > Safely"]
    assert quoted_section(paths, ["Restarting"]) == "Gateway > Restarting"
    assert quoted_section(paths, ["Restarting", "Safely"]) == "Gateway > Restarting"
    assert quoted_section(paths, ["Port", "Safely"]) == "Gateway"
    assert quoted_section(paths, [""]) == "Gateway"  # above every heading: the context's first section
    assert quoted_section(paths, ["Not a section"]) == "Gateway"  # a deeper heading: somewhere in the context
    assert enclosing_section(["A > B", "C"]) == "" and enclosing_section(["A > B > C", "A > B"]) == "A > B"
