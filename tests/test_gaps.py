"""The question log and the documentation-gaps report: real index, real query engine, real SQLite, the real CLI."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

from app.answers import to_answer
from app.composition import build_ingestor, build_query_engine, open_runtime
from app.gaps import documentation_gaps, format_gaps, gaps_csv
from app.question_log import FILE_NAME, REFUSED, WEAK, LoggedQuestion, QuestionLog
from settings import load_settings
from tests.test_ingestion import GUIDE, _cli, write
from tests.test_streamlit_app import CACHE

OFF_TOPIC = "How do I bake sourdough bread at home?"
TOKEN = "hf_" + "Zq7" * 12  # shaped like a Hugging Face token


def _ingest(runtime, docs: Path) -> None:
    write(docs / "guide.md", GUIDE)
    write(docs / "cache.md", CACHE)
    ingestor = build_ingestor(runtime)
    ingestor.ingest(docs)
    ingestor.close()


def logged(index: Path) -> list[LoggedQuestion]:
    return QuestionLog.beside(index).questions()


def test_each_question_is_logged_with_its_outcome_sources_and_missing_names(runtime, settings, tmp_path: Path) -> None:
    _ingest(runtime, tmp_path / "docs")
    engine = build_query_engine(runtime=runtime)
    answered = engine.query("What is the default timeout of the widget?")
    engine.query(OFF_TOPIC)
    engine.query("Where does the widget cache live on Kubernetes?")  # Kubernetes is in no passage: quoting refuses it
    filtered = build_query_engine(runtime=runtime, sources=["cache.md"]).query(OFF_TOPIC)

    rows = logged(settings.storage.index_dir)
    assert [(r.question, r.outcome, r.reason) for r in rows] == [
        ("What is the default timeout of the widget?", "answered", ""),
        (OFF_TOPIC, REFUSED, "no evidence"),
        ("Where does the widget cache live on Kubernetes?", REFUSED, "missing names"),
        (OFF_TOPIC, REFUSED, "filter"),
    ]
    assert rows[0].sources == ["guide.md"] and rows[0].answered_by == "extractive" and rows[0].best_score > 0.4
    assert rows[2].missing_names == ["Kubernetes"] and rows[2].sources == []
    assert answered.metadata["question_id"] == rows[0].id and filtered.metadata["question_id"] == rows[3].id


def test_a_streamed_answer_is_settled_when_its_last_token_is_out(runtime, settings, tmp_path: Path) -> None:
    _ingest(runtime, tmp_path / "docs")
    response = build_query_engine(runtime=runtime, streaming=True).query("Where does the widget cache live?")
    [row] = logged(settings.storage.index_dir)
    assert row.outcome == WEAK and row.sources == []  # nothing is cited before the answer is written
    text = "".join(response.response_gen)
    [row] = logged(settings.storage.index_dir)
    assert row.outcome == "answered" and row.sources == ["cache.md"], text


def test_feedback_and_questions_never_store_a_token(tmp_path: Path) -> None:
    secret = "s3cr3t-milvus-password"
    log = QuestionLog.beside(tmp_path / "index", secrets=(secret,))
    assert log.questions() == [] and not (tmp_path / "index").exists()  # reading creates nothing
    question_id = log.record(f"why does {TOKEN} fail with {secret}?", REFUSED, "no evidence")
    log.feedback(question_id, helpful=False, comment=f"my token is {TOKEN}")
    [row] = log.questions()
    assert row.question == "why does [redacted] fail with [redacted]?" and row.rating == -1 and row.comment == "my token is [redacted]"
    log.close()
    raw = (tmp_path / "index" / FILE_NAME).read_bytes() + b"".join(p.read_bytes() for p in (tmp_path / "index").glob("*-wal"))
    assert TOKEN.encode() not in raw and secret.encode() not in raw


def test_logging_can_be_turned_off(tmp_path: Path) -> None:
    settings = load_settings("local", storage={"index_dir": str(tmp_path / "index")}, feedback={"log_questions": False})
    runtime = open_runtime(settings)
    try:
        _ingest(runtime, tmp_path / "docs")
        response = build_query_engine(runtime=runtime).query(OFF_TOPIC)
    finally:
        runtime.close()
    assert "question_id" not in response.metadata and not (tmp_path / "index" / FILE_NAME).exists()


def test_the_log_survives_reingest_and_never_feeds_an_answer(runtime, settings, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _ingest(runtime, docs)
    build_query_engine(runtime=runtime).query("Where is the sourdough starter kept?")
    write(docs / "guide.md", GUIDE + "\n## Retries\n\nThe widget retries 5 times.\n")
    ingestor = build_ingestor(runtime)
    report = ingestor.ingest(docs)
    # The index directory inside the ingested folder: its question log is not a document.
    index_inside = ingestor.ingest(settings.storage.index_dir.parent)
    ingestor.close()
    assert report.ingested == ["guide.md"] and not any(
        FILE_NAME in name for name in index_inside.ingested + [s for s, _ in index_inside.skipped]
    )
    assert [r.question for r in logged(settings.storage.index_dir)] == ["Where is the sourdough starter kept?"]
    answer = to_answer("sourdough starter", build_query_engine(runtime=runtime).query("Where is the sourdough starter kept?"))
    assert all(FILE_NAME not in s.source for s in answer.sources)


def _question(n: int, text: str, outcome: str = REFUSED, names: list[str] | None = None, asked: float = 1000.0, rating=None):
    return LoggedQuestion(id=n, asked=asked, question=text, outcome=outcome, missing_names=names or [], rating=rating)


def test_gaps_group_questions_by_shared_terms_and_missing_names() -> None:
    questions = [
        _question(1, "How do I rotate the API keys?"),
        _question(2, "What is the widget's default timeout?", outcome="answered"),  # not a gap
        _question(3, "How often should API keys be rotated?", outcome=WEAK),
        _question(4, "Does the widget run on FPGA boards?", names=["FPGA"]),
        _question(5, "Can I deploy to an FPGA?", names=["FPGA"]),
        _question(6, "How do I bake sourdough bread?"),
        _question(7, "How do I install the widget?", outcome="answered", rating=-1, asked=9 * 86400.0),  # rated 👎, days later
    ]
    gaps = documentation_gaps(questions)
    summary = [(g.topic, g.count, g.refused, g.weak, g.not_helpful) for g in gaps]
    assert summary == [
        ("rotate API keys", 2, 1, 1, 0),
        ("FPGA", 2, 2, 0, 0),
        ("install widget", 1, 0, 0, 1),
        ("bake sourdough bread", 1, 1, 0, 0),
    ], summary
    assert gaps[1].missing_names == {"FPGA": 2} and gaps[1].questions == ["Can I deploy to an FPGA?", "Does the widget run on FPGA boards?"]
    assert [g.topic for g in documentation_gaps(questions, since_days=1, now=9 * 86400.0 + 3600)] == ["install widget"]
    text = format_gaps(gaps)
    assert "in no passage: FPGA (2)" in text and "- How often should API keys be rotated?" in text
    assert format_gaps([]).startswith("no documentation gaps")


def test_gaps_csv_cells_never_start_a_formula() -> None:
    rows = list(csv.reader(io.StringIO(gaps_csv(documentation_gaps([_question(1, '=HYPERLINK("http://x") rotate keys?')])))))
    assert rows[0][:3] == ["topic", "questions", "refused"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in rows[1]), rows[1]


def test_cli_gaps_lists_a_refused_question_asked_through_the_cli(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "guide.md", GUIDE)
    index = str(tmp_path / "index")
    assert _cli("ingest", str(docs), "--index", index, "-q").returncode == 0
    assert _cli("ask", OFF_TOPIC, "--index", index).returncode == 0
    assert _cli("ask", "How do I install the widget?", "--index", index).returncode == 0

    out = _cli("gaps", "--index", index, "--json")
    assert out.returncode == 0, out.stderr
    [gap] = json.loads(out.stdout)
    assert gap["questions"] == [OFF_TOPIC] and gap["refused"] == 1 and gap["topic"] == "bake sourdough bread home"
    text = _cli("gaps", "--index", index, "--since", "1")
    assert "bake sourdough bread home" in text.stdout and OFF_TOPIC in text.stdout
    assert _cli("gaps", "--index", index, "--csv").stdout.splitlines()[1].startswith("bake sourdough bread home,1,1,0,0,")
    assert _cli("gaps", "--index", index, "--since", "0").returncode == 2
    with sqlite3.connect(tmp_path / "index" / FILE_NAME) as db:  # both CLI questions are logged, the answered one too
        assert db.execute("SELECT outcome FROM questions ORDER BY id").fetchall() == [("refused",), ("answered",)]


def test_the_async_twin_refuses_times_and_logs_like_the_sync_path(runtime, settings, tmp_path: Path) -> None:
    import asyncio

    _ingest(runtime, tmp_path / "docs")
    engine = build_query_engine(runtime=runtime)
    refused = asyncio.run(engine.aquery(OFF_TOPIC))
    answered = asyncio.run(engine.aquery("Where does the widget cache live?"))
    assert refused.metadata["weak_evidence"] and not answered.metadata["weak_evidence"]
    assert set(answered.metadata["timings_ms"]) >= {"retrieve", "rerank", "generate", "total"}
    assert [(r.question, r.outcome) for r in logged(settings.storage.index_dir)] == [
        (OFF_TOPIC, REFUSED),
        ("Where does the widget cache live?", "answered"),
    ]
