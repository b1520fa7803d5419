"""Cited answers end to end on the embedded default: numbering, snippets, refusals, filters, CLI."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

from app.answers import to_answer
from app.composition import build_query_engine
from integrations.extractive_answer import Choice, ExtractiveAnswerer, Unit, _cited, units
from tests.conftest import REPO
from tests.test_ingestion import GUIDE, _cli, write

CACHE = """# Cache

## Location

The widget cache lives in `~/.cache/widget`. Delete that folder to clear the cache.

## Size limit

The cache never grows beyond 500 MB; the oldest entries are evicted first.
"""


def _ingest(ingestor, tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    write(docs / "cache.md", CACHE)
    ingestor.ingest(docs)
    return docs


def test_citation_numbers_point_to_the_sources_that_contain_the_quoted_text(ingestor, runtime, tmp_path: Path) -> None:
    _ingest(ingestor, tmp_path)
    question = "What is the default timeout of the widget?"
    answer = to_answer(question, build_query_engine(runtime=runtime).query(question))

    markers = [int(n) for n in re.findall(r"\[(\d+)\]", answer.answer)]
    assert markers, answer.answer
    cited = [s.n for s in answer.sources if s.cited]
    assert list(dict.fromkeys(markers)) == cited == list(range(1, len(cited) + 1)), "numbered 1..k in order of first use"
    assert all(s.n is None and not s.cited for s in answer.sources[len(cited) :]), "uncited passages follow, unnumbered"
    for claim in re.split(r"(?<=\])\s+(?!\[)", answer.answer):
        for number in map(int, re.findall(r"\[(\d+)\]", claim)):
            quoted = re.sub(r"\[\d+\]", "", claim).strip()
            assert quoted in " ".join(answer.sources[number - 1].text.split()), (number, quoted)
    assert "30 seconds" in answer.answer
    timeout_source = next(s for s in answer.sources if "timeout" in s.snippet)
    assert timeout_source.file_name == "guide.md" and timeout_source.section == "Widget guide > Configuring the timeout"
    assert timeout_source.snippet in answer.answer, "the snippet is the quoted passage"
    assert answer.answered_by == "extractive" and any("No LLM is configured" in n for n in answer.notices)
    assert set(answer.timings_ms) == {"retrieve", "rerank", "generate", "total"}


def test_question_the_docs_do_not_cover_is_refused_instead_of_quoting_noise(ingestor, runtime, tmp_path: Path) -> None:
    _ingest(ingestor, tmp_path)
    question = "Which football team won the 1998 world cup?"
    answer = to_answer(question, build_query_engine(runtime=runtime).query(question))
    assert answer.weak_evidence and answer.sources == []
    assert "does not seem to cover" in answer.answer


def test_source_filter_restricts_retrieval_to_chosen_files(ingestor, runtime, tmp_path: Path) -> None:
    _ingest(ingestor, tmp_path)
    question = "How do I install and where is the cache?"
    response = build_query_engine(runtime=runtime, sources=["cache.md"]).query(question)
    assert response.source_nodes and {n.node.metadata["source"] for n in response.source_nodes} == {"cache.md"}


def test_streaming_answer_matches_the_sources(ingestor, runtime, tmp_path: Path) -> None:
    _ingest(ingestor, tmp_path)
    question = "Where does the widget cache live?"
    response = build_query_engine(runtime=runtime, streaming=True).query(question)
    text = "".join(response.response_gen)
    answer = to_answer(question, response, answer_text=text)
    assert "~/.cache/widget" in text
    assert response.metadata["answered_by"] == "extractive"
    assert any(s.cited and s.file_name == "cache.md" for s in answer.sources)


def test_cli_ask_json_gives_answer_sources_and_timings(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    index = str(tmp_path / "index")
    assert _cli("ingest", str(docs), "--index", index, "-q").returncode == 0
    out = _cli("ask", "How do I install the widget?", "--index", index, "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert "pip install widget" in data["answer"]
    assert data["sources"][0]["file_name"] == "guide.md" and data["sources"][0]["label"].startswith("guide.md")
    text = _cli("ask", "How do I install the widget?", "--index", index)
    assert "Sources:\n  [1] guide.md, Widget guide" in text.stdout and "Answered by: extractive" in text.stdout


def test_bundled_docs_answer_how_to_ingest_a_folder(ingestor, runtime) -> None:
    ingestor.ingest(REPO / "docs")
    question = "How do I ingest a folder?"
    answer = to_answer(question, build_query_engine(runtime=runtime).query(question))
    assert "python -m app ingest" in answer.answer
    assert any(s.cited and s.file_name == "getting-started.md" for s in answer.sources)


def test_question_naming_something_no_passage_contains_says_so_and_needs_stronger_evidence(ingestor, runtime, tmp_path: Path) -> None:
    _ingest(ingestor, tmp_path)
    question = "Where does the widget cache live on Kubernetes?"
    answer = to_answer(question, build_query_engine(runtime=runtime).query(question))
    assert answer.weak_evidence and answer.sources == [] and "~/.cache/widget" not in answer.answer, (
        "a refusal, not the notice and an answer"
    )
    assert "No passage in the documents mentions Kubernetes." in answer.notices
    assert "No passage in the documents mentions Kubernetes." in answer.answer

    strict = runtime.settings.model_copy(deep=True)
    strict.retrieval.min_dense_score_missing_names = 0.99
    engine = build_query_engine(runtime=replace(runtime, settings=strict))
    refused = to_answer(question, engine.query(question))
    assert refused.weak_evidence and refused.sources == [] and "does not seem to cover" in refused.answer
    assert refused.notices == ["No passage in the documents mentions Kubernetes."]
    named_and_present = "Where does the widget cache live in `~/.cache/widget`?"
    assert not to_answer(named_and_present, engine.query(named_and_present)).weak_evidence


def test_a_passage_cut_mid_token_starts_at_a_word_and_overlapping_passages_of_a_section_are_listed_once() -> None:
    from llama_index.core.schema import TextNode

    from app.answers import Source, merge_overlapping, passage_text

    file_id = "0" * 20
    assert passage_text(TextNode(id_=f"{file_id}#1:3", text="db`), so an existing index is served as it is.")) == (
        "…so an existing index is served as it is."
    )
    whole = "## Storage\n\nThe index is stored in Milvus."
    assert passage_text(TextNode(id_=f"{file_id}#1:0", text=whole)) == whole  # the section's first chunk
    assert passage_text(TextNode(id_=f"{file_id}#1:0..{file_id}#1:2", text=whole)) == whole

    def source(text: str, n: int | None, section: str = "Scaling > serve-store") -> Source:
        return Source(
            n=n, source="scaling.md", file_name="scaling.md", label="", text=text, snippet="", cited=n is not None, section=section
        )

    first = "Serve the index instead. It binds to 127.0.0.1 only and has no authentication at all."
    later = "It binds to 127.0.0.1 only and has no authentication at all. Ctrl-C stops it."
    merged = merge_overlapping([source(first, 1), source("…" + later, None), source("Other.", None, section="Other")])
    assert [(s.n, s.section) for s in merged] == [(1, "Scaling > serve-store"), (None, "Other")]
    assert merged[0].text == "Serve the index instead. It binds to 127.0.0.1 only and has no authentication at all. Ctrl-C stops it."


# -- answers that answer the question asked (issue 24) --------------------------------------------------------------
QUOKKA = """# Quokka gateway

## Default port

The Quokka gateway listens on port 8080 by default. Change the port with the `QUOKKA_PORT` variable.

## Maintainers

Its maintainer is Ottoline Fairweather. Report bugs to the gateway team.

## Restarting

Restart the gateway with `quokka restart` after changing its configuration.
"""

OPERATIONS = """# Operations

## Spending

API spend is metered per request. The monthly spending cap is 25 USD by default.
To change it, set `budget.monthly_cap_usd` in your profile or the `DOCSRAG_BUDGET__MONTHLY_CAP_USD` environment variable.

## Storage

Milvus Lite keeps the index in one file and suits a laptop. For other machines use a Milvus deployment (next section).
A Milvus server serves many processes at once. Use a Milvus server when several users share one index.

## Reverse proxy

Serving the page behind nginx is recommended. Put this server block in the nginx configuration.

```
server {
    listen 80;
    location / { proxy_pass http://127.0.0.1:8501; }
}
```
"""


def _ask(ingestor, runtime, tmp_path: Path, question: str, streaming: bool = False):
    docs = tmp_path / "docs"
    if not docs.exists():
        write(docs / "quokka.md", QUOKKA)
        write(docs / "operations.md", OPERATIONS)
        ingestor.ingest(docs)
    response = build_query_engine(runtime=runtime, streaming=streaming).query(question)
    text = "".join(response.response_gen) if streaming else None
    return to_answer(question, response, answer_text=text)


def _quoted(answer) -> list[str]:
    return [re.sub(r"\s*\[\d+\]", "", claim).strip() for claim in re.findall(r"[^\]]+?\[\d+\]", answer.answer)]


def test_who_question_quotes_the_sentence_naming_the_person(ingestor, runtime, tmp_path: Path) -> None:
    answer = _ask(ingestor, runtime, tmp_path, "Who maintains the Quokka gateway?")
    assert "Ottoline Fairweather" in answer.answer, answer.answer
    assert not answer.weak_evidence


def test_each_part_of_a_two_part_question_gets_its_cited_sentence(ingestor, runtime, tmp_path: Path) -> None:
    answer = _ask(ingestor, runtime, tmp_path, "What is the monthly spending cap and how do I change it?")
    assert "25 USD" in answer.answer and "budget.monthly_cap_usd" in answer.answer, answer.answer
    for claim in _quoted(answer):
        assert any(claim in " ".join(s.text.split()) for s in answer.sources if s.cited), claim


def test_a_sentence_pointing_at_a_section_not_quoted_is_left_out(ingestor, runtime, tmp_path: Path) -> None:
    answer = _ask(ingestor, runtime, tmp_path, "Which Milvus should I use on a server machine?")
    assert "Milvus server" in answer.answer and "next section" not in answer.answer, answer.answer


def test_a_code_block_after_a_sentence_ending_in_a_full_stop_is_quoted_with_it(ingestor, runtime, tmp_path: Path) -> None:
    answer = _ask(ingestor, runtime, tmp_path, "How do I put the page behind nginx?", streaming=True)
    assert "proxy_pass http://127.0.0.1:8501" in answer.answer, answer.answer
    assert "Put this server block in the nginx configuration. [1]" in answer.answer


def test_a_question_naming_something_no_passage_mentions_is_refused_saying_so(ingestor, runtime, tmp_path: Path) -> None:
    for streaming in (False, True):
        answer = _ask(ingestor, runtime, tmp_path, "How do I serve gRPC endpoints from the Quokka gateway?", streaming=streaming)
        assert answer.weak_evidence and answer.sources == [], answer.answer
        assert "No passage in the documents mentions gRPC." in answer.answer and not re.search(r"\[\d+\]", answer.answer)


def test_a_quoted_sentence_is_labelled_with_a_section_it_is_in(ingestor, runtime, tmp_path: Path) -> None:
    answer = _ask(ingestor, runtime, tmp_path, "Which port does Quokka listen on and how do I restart it?")
    restart = [s for s in answer.sources if s.cited and "quokka restart" in s.text]
    assert restart, answer.answer
    assert [s.section for s in restart] == ["Quokka gateway"], answer.answer  # quotes from two of its sections
    answer = _ask(ingestor, runtime, tmp_path, "Who maintains the Quokka gateway?")
    assert answer.answer.startswith("Its maintainer is Ottoline Fairweather. [1]"), answer.answer
    only_maintainers = "restart" not in answer.answer and "port" not in answer.answer
    expected = "Quokka gateway > Maintainers" if only_maintainers else "Quokka gateway"
    assert [s.section for s in answer.sources if s.cited] == [expected], answer.answer


SETTINGS_TABLE = """# Gateway settings

The gateway reads these settings at start-up:

| Setting | Default | Meaning |
|---------|---------|---------|
| `gateway.timeout` | 30 s | How long one request may take. |
| `gateway.retries` | 3 | Attempts before the gateway gives up. |
"""


def test_a_table_row_is_quoted_with_its_columns_and_the_sentence_introducing_the_table() -> None:
    choice = ExtractiveAnswerer().choose("What is the default timeout of a gateway request, and how many retries?", [SETTINGS_TABLE])
    assert choice.text.count("The gateway reads these settings at start-up: [1]") == 1, choice.text
    assert "Setting: `gateway.timeout`; Default: 30 s; Meaning: How long one request may take. [1]" in choice.text, choice.text
    assert "Setting: `gateway.retries`; Default: 3" in choice.text, choice.text


RELEASE_NOTES = """# Gateway 2.1 release notes

The gateway now retries failed requests. To turn off retries of the gateway, set `gateway.retries` to 0.
"""
HOW_TO = """# Retries

To turn off the gateway's retries, set `gateway.retries` to 0 in its configuration file.
"""


def test_release_notes_answer_what_changed_not_how_to() -> None:
    answerer = ExtractiveAnswerer()
    places = ["releases/2.1.md > Gateway 2.1 release notes", "guide/retries.md > Retries"]
    how = answerer.choose("How do I turn off retries of the gateway?", [RELEASE_NOTES, HOW_TO], places=places)
    assert how.units[0].source == 2, how.text
    changed = answerer.choose("What changed about retries in gateway 2.1?", [RELEASE_NOTES, HOW_TO], places=places)
    assert changed.units[0].source == 1, changed.text


ENV_VARS = """# Environment variables

## `GATEWAY_CA_FILE`

If this environment variable is set then the gateway loads CA certificates from the file it names.
The default is the system bundle. Deployments with a private CA should set this variable.

CA bundle) delivered by a trusted authority, cut where a chunk began.

!!! note "Careful"
    Relative paths are resolved against the working directory of the gateway.
"""


def test_units_stand_on_their_own() -> None:
    found = {unit.sentence: unit for unit in units(ENV_VARS)}
    # "this environment variable" is the heading's: the heading is quoted before it.
    ca = next(u for s, u in found.items() if s.startswith("If this environment variable"))
    assert ca.lead == "`GATEWAY_CA_FILE`"
    assert _cited(ca).startswith("`GATEWAY_CA_FILE` [1] If this environment variable is set")
    assert found["Deployments with a private CA should set this variable."].lead == "`GATEWAY_CA_FILE`"
    assert not any("delivered by a trusted" in s for s in found), "a sentence cut at a chunk's edge is no answer"
    assert "Relative paths are resolved against the working directory of the gateway." in found  # no '!!! note "Careful"'


POOL = """You can control the pool size with the `limits` argument. It takes a `Limits` object which defines:

- `max_keepalive`, allowed keep-alive connections. (Default 20)
- `max_connections`, allowed connections in the pool. (Default 100)
"""


def test_a_list_item_quoted_with_its_list_is_not_quoted_again() -> None:
    choice = ExtractiveAnswerer().choose("What are the default limits of the connection pool?", [POOL])
    assert "(Default 20)" in choice.text and choice.text.count("`max_connections`") == 1, choice.text


def test_a_sentence_is_quoted_once_before_the_one_leaning_on_it_whichever_was_chosen_first() -> None:
    intro = Unit(1, "You can control the pool with `limits`.", "You can control the pool with `limits`.")
    leaning = Unit(1, "It takes a `Limits` object.", "It takes a `Limits` object.", lead=intro.sentence)
    expected = "You can control the pool with `limits`. [1] It takes a `Limits` object. [1]"
    assert Choice(units=[leaning, intro]).text == Choice(units=[intro, leaning]).text == expected
