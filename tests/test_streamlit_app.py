"""The Streamlit page, driven headlessly with AppTest against real indexes on the embedded default.

Each test reads what a user would see: answer text, numbered sources, captions,
warnings and the sidebar. Indexes are real Milvus Lite directories built in tmp.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app.chat import rewritten_question
from app.composition import build_ingestor, open_runtime
from app.ui.uploads import UploadRejected, safe_name
from settings import load_settings
from tests import docfactory
from tests.conftest import REPO
from tests.test_ingestion import GUIDE, write

PAGE = str(REPO / "streamlit_app.py")
PROXY = """# Proxy server

## Idle connections

The proxy server closes idle client connections to free its worker slots. Keep-alive connections are reused while they are busy.

## Idle timeout

The proxy closes a connection after an idle timeout of 90 seconds. Change it with the `idle_timeout` key in proxy.toml.
"""
CACHE = """# Cache

## Location

The widget cache lives in `~/.cache/widget`. Delete that folder to clear the cache.

## Size limit

The cache never grows beyond 500 MB; the oldest entries are evicted first.
"""
_HEADING = re.compile(r"^\*\*\[(\d+)\] (.+?)\*\*(?: · \[open ↗\]\((.+)\))?$")


# ---- fixtures and helpers -------------------------------------------------------------------------------------------
def build_index(docs: Path, index: Path) -> list[str]:
    """Ingest ``docs`` into ``index`` with the CLI's code path; returns the ingested files."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DOCSRAG_PROFILE", raising=False)
        runtime = open_runtime(load_settings("local", storage={"index_dir": str(index)}))
        ingestor = build_ingestor(runtime)
        report = ingestor.ingest(docs)
        ingestor.close()
        runtime.close()
    return sorted(report.ingested)


@pytest.fixture(scope="module")
def docs_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed index of three small Markdown guides (widget.md, proxy.md, cache.md)."""
    root = tmp_path_factory.mktemp("page")
    for name, text in {"widget.md": GUIDE, "proxy.md": PROXY, "cache.md": CACHE}.items():
        write(root / "docs" / name, text)
    assert build_index(root / "docs", root / "index") == ["cache.md", "proxy.md", "widget.md"]
    return root / "index"


@pytest.fixture(autouse=True)
def _fresh_page_cache() -> Iterator[None]:
    """Each test's page opens its own runtime; closing them (on_release) frees the Milvus Lite directories."""
    yield
    st.cache_resource.clear()


def unescape(markdown: str) -> str:
    return re.sub(r"\\(.)", r"\1", markdown)


def open_page(monkeypatch: pytest.MonkeyPatch, index_dir: Path, **env: str) -> AppTest:
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(index_dir))
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def copy_index(docs_index: Path, tmp_path: Path) -> Path:
    target = tmp_path / "index"
    shutil.copytree(docs_index, target)
    return target


def ask(at: AppTest, question: str):
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at.chat_message[-1]


def answer_text(block) -> str:
    return unescape(block.markdown[0].value)


def headings(block) -> dict[int, str]:
    """Source number → 'file — page · section' for every source shown in an assistant message."""
    found = {}
    for element in block.markdown:
        match = _HEADING.match(unescape(element.value))
        if match:
            found[int(match.group(1))] = match.group(2)
    return found


def cited_headings(block) -> dict[int, str]:
    """The sources shown outside the 'retrieved but not cited' expander."""
    hidden = [e for e in block.expander if "not cited" in e.label]
    folded = set(headings(hidden[0])) if hidden else set()
    return {n: h for n, h in headings(block).items() if n not in folded}


def captions(block) -> list[str]:
    return [unescape(c.value) for c in block.caption]


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


# ---- tests --------------------------------------------------------------------------------------------------------
def test_answer_shows_numbered_sources_matching_its_citations(monkeypatch, docs_index: Path) -> None:
    at = open_page(monkeypatch, docs_index)
    sidebar = "\n".join(unescape(m.value) for m in at.sidebar.markdown) + "\n".join(c.value for c in at.sidebar.caption)
    assert "**Profile:** local" in sidebar and "extractive quotes (no LLM configured)" in sidebar
    assert "Offline reranking is not available" in sidebar
    assert not at.sidebar.progress  # no API usage meter without API backends
    assert sorted(at.sidebar.dataframe[0].value["file"]) == ["cache.md", "proxy.md", "widget.md"]

    at.sidebar.toggle[0].set_value(False).run()  # the non-streaming path
    reply = ask(at, "What is the default timeout of the widget?")

    assert at.chat_message[-2].markdown[0].value == "What is the default timeout of the widget?"
    text = answer_text(reply)
    assert "30 seconds" in text
    markers = {int(n) for n in re.findall(r"\[(\d+)\]", text)}
    shown = cited_headings(reply)
    assert markers and set(shown) == markers, (text, shown)
    assert sorted(headings(reply)) == list(range(1, len(headings(reply)) + 1))
    # The passage is the enclosing section of the hit (the retriever grows small chunks to whole sections).
    timeout_source = next((n for n, h in shown.items() if h.startswith("widget.md — Widget guide")), None)
    assert timeout_source, (text, headings(reply))
    snippets = [m.value for m in reply.markdown if m.value.startswith("> ")]
    assert any(":orange-background[timeout]" in s for s in snippets), snippets
    assert "Answered by **extractive**" in captions(reply)
    assert any("No LLM is configured" in c for c in captions(reply))
    timings = [c for c in captions(reply) if " ms · " in c]  # one line under the answer
    assert len(timings) == 1, captions(reply)
    timings = timings[0]
    assert re.fullmatch(r"(condense [\d,]+ ms · )?retrieve [\d,]+ ms · rerank [\d,]+ ms · generate [\d,]+ ms · total [\d,]+ ms", timings), (
        timings
    )
    full = next(e for e in reply.expander if e.label == f"Full passage [{timeout_source}]")
    passage = full.markdown[0].value  # rendered as Markdown: headings demoted, code as code, question words highlighted
    assert "The :orange-background[default] :orange-background[timeout] is 30 seconds." in passage, passage
    assert passage.startswith("#### :orange-background[Widget] guide\n") and "`pip install" in passage


def test_streamed_answer_and_follow_up_condensed_with_the_history(monkeypatch, docs_index: Path) -> None:
    at = open_page(monkeypatch, docs_index)
    assert at.sidebar.toggle[0].value is True  # streaming is the default
    first = ask(at, "How does the proxy server handle idle connections?")
    assert "closes idle client connections" in answer_text(first)
    assert "▌" not in answer_text(first)
    assert any(" · first token " in c for c in captions(first)), captions(first)

    follow_up = ask(at, "and what is its default timeout?")
    assert "Searched for: and what is its default timeout? (proxy server handle idle connections)" in captions(follow_up)
    assert "90 seconds" in answer_text(follow_up)
    assert "30 seconds" not in answer_text(follow_up)  # the widget's timeout is what the bare follow-up would find
    assert all(h.startswith("proxy.md") for h in cited_headings(follow_up).values())
    assert len(at.chat_message) == 4  # both questions and answers stay in the history

    # One click searches the question as the user wrote it: the turn is answered again, without the proxy's terms.
    button(at, "Search my question as asked").click().run()
    assert not at.exception, at.exception
    assert len(at.chat_message) == 4 and at.chat_message[-2].markdown[0].value == "and what is its default timeout?"
    as_asked = at.chat_message[-1]
    assert not any(c.startswith("Searched for:") for c in captions(as_asked)), captions(as_asked)
    assert "30 seconds" in answer_text(as_asked)
    assert not [b for b in at.button if b.label == "Search my question as asked"]

    # A new question that happens to say "it" is not a follow-up: nothing of the conversation joins its search.
    unrelated = ask(at, "Where does the widget cache live and how do I clear it?")
    assert not any(c.startswith("Searched for:") for c in captions(unrelated)), captions(unrelated)
    assert "~/.cache/widget" in answer_text(unrelated)


def test_sidebar_filter_restricts_retrieval_to_the_selected_documents(monkeypatch, docs_index: Path) -> None:
    at = open_page(monkeypatch, docs_index)
    at.sidebar.multiselect[0].set_value(["cache.md"]).run()
    reply = ask(at, "How large can the cache grow?")
    assert "500 MB" in answer_text(reply)
    assert headings(reply) and all(h.startswith("cache.md") for h in headings(reply).values())


def test_empty_index_calls_to_ingest_then_an_uploaded_pdf_is_answerable(monkeypatch, tmp_path: Path) -> None:
    at = open_page(monkeypatch, tmp_path / "index")
    assert "No documents are indexed yet" in at.info[0].value
    assert at.chat_input[0].disabled
    assert "No documents yet." in [c.value for c in at.sidebar.caption]

    pdf = docfactory.make_manual_pdf(tmp_path / "manual.pdf").read_bytes()
    junk = docfactory.make_junk_pdf(tmp_path / "junk.pdf").read_bytes()
    at.sidebar.file_uploader[0].set_value([("manual.pdf", pdf, "application/pdf"), ("junk.pdf", junk, "application/pdf")]).run()
    button(at, "Add to index").click().run()
    assert not at.exception, at.exception

    [summary] = [unescape(s.value) for s in at.sidebar.success]
    assert summary.startswith("uploads: 1 ingested, 0 unchanged, 1 skipped, 0 removed"), summary
    assert [unescape(w.value) for w in at.sidebar.warning] == ["Skipped junk.pdf: not a PDF (no %PDF header); the upload was not kept"]
    assert list(at.sidebar.dataframe[0].value["file"]) == ["manual.pdf"]
    assert sorted(p.name for p in (tmp_path / "index" / "uploads").iterdir()) == ["manual.pdf"]  # the rejected one is gone
    assert (tmp_path / "index" / "uploads" / "manual.pdf").read_bytes() == pdf
    assert not at.info and not at.chat_input[0].disabled
    assert not at.sidebar.file_uploader[0].value and button(at, "Add to index").disabled  # the uploader was emptied

    # The next upload reports only itself: the skipped file is not read (and warned about) again.
    at.sidebar.file_uploader[0].set_value([("notes.md", b"# Notes\n\nThe widget logs to syslog.\n", "text/markdown")]).run()
    button(at, "Add to index").click().run()
    [summary] = [unescape(s.value) for s in at.sidebar.success]
    assert summary.startswith("uploads: 1 ingested, 1 unchanged, 0 skipped, 0 removed"), summary
    assert not at.sidebar.warning

    reply = ask(at, "How do I start the widget daemon?")
    assert "widgetd" in answer_text(reply)
    assert "manual.pdf — p. 6 (4) · 2 Usage" in cited_headings(reply).values()


def test_upload_names_with_a_path_and_oversized_files_are_rejected(monkeypatch, tmp_path: Path) -> None:
    at = open_page(monkeypatch, tmp_path / "index", DOCSRAG_INGESTION__MAX_FILE_MB="0.01")
    evil = b"# Evil\n\nThis file tries to escape the uploads folder.\n"
    at.sidebar.file_uploader[0].set_value([("../../evil.md", evil, "text/markdown"), ("big.txt", b"word " * 4000, "text/plain")]).run()
    button(at, "Add to index").click().run()
    assert not at.exception, at.exception

    errors = [unescape(e.value) for e in at.sidebar.error]
    assert errors == [
        "'../../evil.md' rejected: a file name must not contain a path (/, \\ or ..)",
        "'big.txt' rejected: 0.0191 MB is over the 0.01 MB limit (ingestion.max_file_mb)",
    ]
    assert not list(tmp_path.rglob("evil.md"))
    assert not (tmp_path / "index" / "uploads").exists() or not any((tmp_path / "index" / "uploads").iterdir())
    assert not at.sidebar.success and "No documents yet." in [c.value for c in at.sidebar.caption]


def test_reindex_reads_changed_files_and_reports_skipped_ones(monkeypatch, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    write(docs / "widget.md", GUIDE)
    build_index(docs, tmp_path / "index")
    at = open_page(monkeypatch, tmp_path / "index")

    write(docs / "widget.md", GUIDE + "\n## Retries\n\nThe widget retries a failed request 5 times before it gives up.\n")
    docfactory.make_junk_pdf(docs / "broken.pdf")
    button(at, "Re-index folders").click().run()
    assert not at.exception, at.exception

    [summary] = [unescape(s.value) for s in at.sidebar.success]
    assert summary.startswith("docs: 1 ingested, 0 unchanged, 1 skipped, 0 removed"), summary
    assert [unescape(w.value) for w in at.sidebar.warning] == ["Skipped broken.pdf: not a PDF (no %PDF header)"]
    reply = ask(at, "How many times does the widget retry a failed request?")
    assert "5 times" in answer_text(reply)


@pytest.mark.parametrize(
    ("name", "stored"),
    [("guide.md", "guide.md"), ("Release notes (v2)?.PDF", "Release notes _v2_.pdf"), ("..hidden.txt", "hidden.txt")],
)
def test_upload_names_are_sanitised(name: str, stored: str) -> None:
    assert safe_name(name) == stored


@pytest.mark.parametrize("name", ["../x.md", "/etc/passwd.txt", "dir\\x.md", "..", "a\x00b.md", "tool.exe"])
def test_unsafe_upload_names_are_refused(name: str) -> None:
    with pytest.raises(UploadRejected):
        safe_name(name)


def test_backend_failure_keeps_the_question_and_says_what_failed(monkeypatch, docs_index: Path, tmp_path: Path) -> None:
    index = copy_index(docs_index, tmp_path)
    at = open_page(monkeypatch, index)
    from app.ui.runtime import page_runtime

    page_runtime(load_settings()).store.client.close()  # the vector store goes away under the page
    reply = ask(at, "Where does the widget cache live?")

    assert at.chat_message[-2].markdown[0].value == "Where does the widget cache live?"
    error = unescape(reply.error[0].value)
    assert error.startswith("This question could not be answered: MilvusException") and "Your question is kept" in error
    at.run()  # a rerun replays the history: the question and its error are still there
    assert at.chat_message[0].markdown[0].value == "Where does the widget cache live?"
    assert "could not be answered" in at.chat_message[1].error[0].value

    st.cache_resource.clear()  # the store is back: the page opens it again
    button(at, "Ask again").click().run()
    assert not at.exception, at.exception
    assert [m.markdown[0].value for m in at.chat_message if m.name == "user"] == ["Where does the widget cache live?"] * 2
    assert "~/.cache/widget" in answer_text(at.chat_message[-1])


@pytest.fixture
def loopback() -> Iterator:
    """The loopback Hugging Face router (tests/loopback_server.py)."""
    from tests.loopback_server import LoopbackServer

    server = LoopbackServer().start()
    yield server
    server.stop()


def hf_env(server) -> dict[str, str]:
    return {
        "DOCSRAG_HF_TOKEN": "hf_loopback_token",
        "DOCSRAG_HF_BASE_URL": server.url,
        "DOCSRAG_LLM__CHAIN": '["hf_api"]',
        "DOCSRAG_LLM__HF_MODELS": '["loopback/chat-model"]',
        "DOCSRAG_LLM__DEADLINE_S": "5",
    }


def test_hf_answer_streams_and_names_its_model(monkeypatch, docs_index: Path, tmp_path: Path, loopback) -> None:
    at = open_page(monkeypatch, copy_index(docs_index, tmp_path), **hf_env(loopback))
    assert "hf_api (loopback/chat-model…) → extractive quotes" in unescape("\n".join(m.value for m in at.sidebar.markdown))
    assert unescape(at.sidebar.progress[0].text) == "API usage this month: $0.00 of $25.00 (ok)"
    reply = ask(at, "How large can the cache grow?")
    assert answer_text(reply).startswith("According to the documentation")
    assert "Answered by **hf_api:loopback/chat-model**" in captions(reply)
    assert not reply.warning
    [request] = loopback.requests("chat")
    assert request.body["stream"] is True and request.body["model"] == "loopback/chat-model"


def test_hf_503_falls_back_with_a_notice(monkeypatch, docs_index: Path, tmp_path: Path, loopback) -> None:
    loopback.add_fault("chat", "503")
    at = open_page(monkeypatch, copy_index(docs_index, tmp_path), **hf_env(loopback))
    reply = ask(at, "How large can the cache grow?")
    assert "500 MB" in answer_text(reply)
    warning = unescape(reply.warning[0].value)
    assert warning.startswith("Answered by a fallback backend. Skipped:") and "hf_api:loopback/chat-model" in warning and "503" in warning
    assert "Answered by **extractive**" in captions(reply)
    assert cited_headings(reply) and all(h.startswith("cache.md") for h in cited_headings(reply).values())


def test_a_backend_that_cannot_start_is_named_on_the_page(monkeypatch, tmp_path: Path) -> None:
    at = open_page(monkeypatch, tmp_path / "index", DOCSRAG_PROFILE="hf_api")  # the HF profile without HF_TOKEN
    [error] = [unescape(e.value) for e in at.error]
    assert error.startswith("docsrag could not start:") and "HF_TOKEN" in error
    assert not at.chat_input


def test_answer_cut_off_mid_stream_keeps_the_question_and_the_text_so_far(monkeypatch, docs_index: Path, tmp_path: Path, loopback) -> None:
    loopback.add_fault("chat", "stream_error_after_token")
    at = open_page(monkeypatch, copy_index(docs_index, tmp_path), **hf_env(loopback))
    reply = ask(at, "How large can the cache grow?")
    assert at.chat_message[-2].markdown[0].value == "How large can the cache grow?"
    assert reply.markdown[0].value.startswith("According to")  # the tokens that arrived stay visible
    error = unescape(reply.error[0].value)
    assert error.startswith("This question could not be answered: StreamInterruptedError: hf_api:loopback/chat-model failed after")
    assert "Your question is kept" in error


def test_first_start_on_an_empty_index_ingests_the_startup_folder_with_progress(tmp_path, monkeypatch) -> None:
    docs = tmp_path / "bundled"
    docs.mkdir()
    (docs / "guide.md").write_text("# Guide\n\nTo ingest a folder, run `python -m app ingest PATH` from the checkout.\n")
    monkeypatch.setenv("DOCSRAG_STORAGE__INDEX_DIR", str(tmp_path / "index"))
    monkeypatch.setenv("DOCSRAG_INGESTION__STARTUP_FOLDERS", json.dumps([str(docs)]))
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120).run()
    assert not at.exception
    assert list(at.sidebar.dataframe[0].value["file"]) == ["guide.md"], "the startup folder was indexed"
    assert any("1 ingested" in s.value for s in at.success)
    at.chat_input[0].set_value("How do I ingest a folder?").run()
    assert any("python -m app ingest PATH" in m.value for m in at.markdown)


def test_an_llm_rewrite_is_its_first_line_without_a_label_and_an_echoed_prompt_is_refused() -> None:
    from llama_index.core.chat_engine.condense_question import DEFAULT_PROMPT

    assert rewritten_question("Standalone question: How large can the proxy cache grow?") == "How large can the proxy cache grow?"
    assert rewritten_question("**Standalone question:**\n\nHow large can the proxy cache grow?") == "How large can the proxy cache grow?"
    assert rewritten_question("\nHow do I set the proxy timeout?\nThis rewrite adds the proxy from the history.") == (
        "How do I set the proxy timeout?"
    )
    assert rewritten_question(DEFAULT_PROMPT.format(question="and its timeout?", chat_history="user: proxy?")) is None
    assert rewritten_question("word " * 61) is None
    assert rewritten_question("  ") is None


def test_a_refusal_under_a_document_filter_says_so_and_searches_everything_on_request(monkeypatch, docs_index: Path) -> None:
    at = open_page(monkeypatch, docs_index)
    at.sidebar.multiselect[0].set_value(["cache.md"]).run()
    reply = ask(at, "How long may an idle proxy connection stay open?")
    assert reply.markdown[0].value and not cited_headings(reply)  # refused: the cache guide does not cover it
    assert "Not answered: no passage in the documents was close enough to the question." in captions(reply)
    assert [unescape(i.value) for i in reply.info] == ["Only cache.md was searched (the sidebar's document filter)."]

    button(at, "Search all documents").click().run()
    assert not at.exception, at.exception
    assert at.sidebar.multiselect[0].value == []  # the filter is off
    again = at.chat_message[-1]
    assert "90 seconds" in answer_text(again) and not again.info
    assert all(h.startswith("proxy.md") for h in cited_headings(again).values())

    at.sidebar.multiselect[0].set_value(["proxy.md"]).run()  # a filter that does cover it: no note
    assert not ask(at, "How long may an idle proxy connection stay open?").info


def test_an_upload_name_with_a_nul_byte_is_refused_with_a_message(monkeypatch, tmp_path: Path) -> None:
    at = open_page(monkeypatch, tmp_path / "index")
    text = b"# Notes\n\nThe widget logs to syslog.\n"
    at.sidebar.file_uploader[0].set_value([("evil\x00.md", text, "text/markdown"), ("good.md", text, "text/markdown")]).run()
    assert not at.exception, at.exception
    button(at, "Add to index").click().run()
    assert not at.exception, at.exception
    assert [unescape(e.value) for e in at.sidebar.error] == ["'evil\\x00.md' rejected: the file name contains control characters"]
    assert [p.name for p in (tmp_path / "index" / "uploads").iterdir()] == ["good.md"]
    assert list(at.sidebar.dataframe[0].value["file"]) == ["good.md"]


def test_passages_render_as_markdown_with_code_kept_and_nothing_live() -> None:
    from app.ui.safe_markdown import passage, snippet

    text = (
        "# Proxy\n\nSet `--index DIR` first. ![status](http://127.0.0.1:9/x.png) [docs](http://e.org) <img src=x> www.e.org $x$\n\n"
        "```toml\nidle = 90  # ![i](http://e/i.png)\n```\n\n| key | default |\n|:---|---:|\n| `idle` | 90 |\n\n"
        "Usage\n=====\n\n    indented ![c](http://e/c.png)\n- item\n  ```\n![z](http://e/z.png)\n  ```\n\\`![q](http://e/q.png)`\n"
    )
    assert passage(text, "What does --index do?").splitlines() == [
        "#### Proxy",  # headings sit below the page's own
        "",
        # An image as its alt text, a link as its words and address, all escaped so nothing can form a link or image;
        # a word joiner (U+2060) after "http"/"www" stops GFM's linking of bare URLs.
        "Set `--index DIR` first. \\[image\\: status\\] docs (http\u2060\\://e.org) \\<img src=x> www\u2060.e.org \\$x\\$",
        "",
        "```toml",  # a fence re-emitted at column 0, so no container can end it early
        "idle = 90  # ![i](http://e/i.png)",
        "```",
        "",
        "| key | default |",
        "|:---|---:|",
        "| `idle` | 90 |",
        "",
        "#### Usage",
        "",
        "```",
        "indented ![c](http://e/c.png)",
        "```",
        "",
        "- item",
        "```",  # a list item's fence hoisted: the unindented image line would otherwise end it and render
        "![z](http://e/z.png)",
        "```",
        "\\\\`![q](http://e/q.png)`",  # the document's escaped backtick stays a literal backslash before real code
    ]
    # Highlights wrap words outside code only; a code span containing a question word stays whole.
    assert snippet("Run `python -m app ingest --index DIR` to pick the index.", "which index?") == (
        "Run `python -m app ingest --index DIR` to pick the :orange-background[index]\\."
    )


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        # A fenced block flattened into a quote: the fence and its language go, the code reads as text.
        (
            "Serve the index instead: ```bash # stop every process, then: python -m app serve-store",
            "Serve the index instead: stop every process, then: python -m app serve-store",
        ),
        # Escapes written in the document (or by an HTML converter) show as the rendered docs show them.
        ("the `storage:` section\\) with index\\_dir", "the `storage:` section) with index_dir"),
        ("- It binds to **127.0.0.1** only.", "It binds to 127.0.0.1 only."),
        (
            "## Using docsrag from Python ```python from app import build_query_engine",
            "Using docsrag from Python from app import build_query_engine",
        ),
    ],
)
def test_snippets_show_markdown_as_it_renders_and_never_an_escape(text: str, shown: str) -> None:
    from app.ui.safe_markdown import snippet

    markdown = snippet(text)
    # What st.markdown shows: escaped characters without their backslash, code spans as they are.
    assert re.sub(r"\\(.)", r"\1", markdown) == shown, markdown
    assert "\\\\" not in markdown and "``" not in markdown and "**" not in markdown


def test_ingest_progress_counts_bytes_known_before_reading_and_chunks_as_they_come() -> None:
    from app.ingest_progress import IngestProgress

    mb = 1024 * 1024
    now = [0.0]
    progress = IngestProgress(batch_files=2, batch_mb=8, clock=lambda: now[0])
    progress.planned([1 * mb, 1 * mb, 2 * mb, 4 * mb], folder="uploads")  # batches: a+b (2 files), c+d (6 MB)
    progress.files(0, 4, "a.pdf", folder="uploads")
    assert progress.text() == "uploads: 0 of 4 files done · 0 chunks embedded · 0.0 of 8.0 MB · estimating the time left"
    progress.chunks(0, 300)  # the first batch chunked into 300
    now[0] = 10.0
    progress.chunks(150, 300)  # half of the first batch's 2 MB
    assert progress.fraction() == 1 / 8
    assert progress.text() == "uploads: 0 of 4 files done · 150 chunks embedded · 1.0 of 8.0 MB · about 1 min 10 s left"
    progress.chunks(300, 300)
    progress.files(2, 4, "b.pdf", folder="uploads")
    progress.chunks(0, 40)  # far fewer chunks per byte in the second batch: the total (bytes) does not move
    now[0] = 20.0
    progress.chunks(20, 40)
    assert progress.fraction() == 5 / 8  # 2 MB done + half of the batch's 6 MB
    assert progress.text() == "uploads: 2 of 4 files done · 320 chunks embedded · 5.0 of 8.0 MB · about 12 s left"
    progress.chunks(40, 40)
    progress.files(4, 4, "d.pdf", folder="uploads")
    assert progress.fraction() == 1.0 and progress.embedded == 340


def test_ingest_progress_without_sizes_counts_files() -> None:
    from app.ingest_progress import IngestProgress

    progress = IngestProgress(batch_files=2)
    progress.files(1, 4, "a.pdf")  # the Ray engine reports files only
    assert progress.fraction() == 0.25
    assert progress.text() == "1 of 4 files done · 0 chunks embedded · estimating the time left"


def test_sources_link_to_the_published_page_and_anchor_when_a_base_url_is_set() -> None:
    from app.answers import Source
    from app.ui.links import SourceLinks

    def source(path: str, **where) -> Source:
        return Source(n=1, source=path, file_name=path.rsplit("/", 1)[-1], label="", text="", snippet="", cited=True, **where)

    links = SourceLinks("https://docs.example.org/en/latest/", records=[])
    assert links.url(source("guide/proxy.md", section="Proxy server > Idle timeout")) == (
        "https://docs.example.org/en/latest/guide/proxy.html#idle-timeout"
    )
    assert links.url(source("api.rst", section="Réglages > Délai (s)")) == "https://docs.example.org/en/latest/api.html#delai-s"
    assert links.url(source("site/index.html", section="Install")) == "https://docs.example.org/en/latest/site/index.html#install"
    assert links.url(source("manual v2.pdf", page=6)) == "https://docs.example.org/en/latest/manual%20v2.pdf#page=6"
    assert SourceLinks("", records=[]).url(source("site/index.html", section="Install")) is None  # never served live


def test_a_cap_under_one_cent_is_named_in_full(tmp_path: Path) -> None:
    from integrations.usage_meter import BudgetExceeded, UsageMeter, usd
    from settings.model import BudgetSettings

    budget = BudgetSettings(monthly_cap_usd=0.005)
    meter = UsageMeter(tmp_path / "usage.sqlite", budget)
    with pytest.raises(BudgetExceeded, match=r"^monthly API budget of \$0\.005 reached"):
        meter.reserve("Qwen/Qwen2.5-7B-Instruct", 100_000, 1_000)
    meter.close()
    assert [usd(0.005), usd(0), usd(25), usd(1234.5)] == ["$0.005", "$0.00", "$25.00", "$1,234.50"]


def test_an_upload_named_like_an_indexed_file_is_listed_under_another_name(monkeypatch, docs_index: Path, tmp_path: Path) -> None:
    at = open_page(monkeypatch, copy_index(docs_index, tmp_path))
    text = b"# Proxy notes\n\nOur proxy runs on port 3128.\n"
    at.sidebar.file_uploader[0].set_value([("proxy.md", text, "text/markdown")]).run()
    button(at, "Add to index").click().run()
    assert not at.exception, at.exception
    notes = [unescape(i.value) for i in at.sidebar.info]
    assert len(notes) == 1 and notes[0].startswith("proxy.md is listed as ") and notes[0] != "proxy.md is listed as proxy.md", notes
    files = list(at.sidebar.dataframe[0].value["file"])
    assert "proxy.md" in files and len(files) == 4  # the CLI-ingested proxy.md is still there, beside the upload


def test_a_broken_reupload_of_an_indexed_upload_keeps_the_good_file_and_its_index_entry(monkeypatch, tmp_path: Path) -> None:
    at = open_page(monkeypatch, tmp_path / "index")
    good = b"# Notes\n\nThe widget logs to syslog through the journald bridge.\n"
    at.sidebar.file_uploader[0].set_value([("notes.md", good, "text/markdown")]).run()
    button(at, "Add to index").click().run()
    assert list(at.sidebar.dataframe[0].value["file"]) == ["notes.md"]

    at.sidebar.file_uploader[0].set_value([("notes.md", b"\x00\x01binary\x00junk" * 50, "text/markdown")]).run()
    button(at, "Add to index").click().run()
    assert not at.exception, at.exception
    [warning] = [unescape(w.value) for w in at.sidebar.warning]
    assert warning.startswith("Skipped notes.md: binary content") and "the earlier file of that name is" in warning, warning
    assert [p.name for p in (tmp_path / "index" / "uploads").iterdir()] == ["notes.md"]
    assert (tmp_path / "index" / "uploads" / "notes.md").read_bytes() == good
    assert list(at.sidebar.dataframe[0].value["file"]) == ["notes.md"]

    button(at, "Re-index folders").click().run()  # the restored file is the indexed one: nothing to do
    [summary] = [unescape(s.value) for s in at.sidebar.success]
    assert "0 ingested, 1 unchanged, 0 skipped, 0 removed" in summary, summary
    assert "journald" in answer_text(ask(at, "Where does the widget log to?"))


def test_feedback_on_an_answer_and_the_documentation_gaps_view(monkeypatch, docs_index: Path, tmp_path: Path) -> None:
    from app.question_log import QuestionLog
    from tests.test_ingestion import _cli

    index = copy_index(docs_index, tmp_path)
    for logged in index.glob("questions.sqlite*"):  # the questions other tests asked of the shared index
        logged.unlink()
    at = open_page(monkeypatch, index)
    at.sidebar.toggle[0].set_value(False).run()
    refused = ask(at, "How do I bake sourdough bread at home?")
    assert "does not seem to cover" in answer_text(refused)
    answered = ask(at, "How large can the cache grow?")
    assert "500 MB" in answer_text(answered)
    assert len(at.feedback) == 2  # 👍/👎 under each answer
    at.feedback[1].set_value(0).run()  # 👎 on the answered question
    at.text_input[0].set_value("It should say how to change the limit").run()
    assert not at.exception, at.exception
    assert any("documentation-gaps report" in c.value for c in at.chat_message[-1].caption)
    rows = QuestionLog.beside(index).questions()
    assert [(r.question, r.outcome, r.rating, r.comment) for r in rows] == [
        ("How do I bake sourdough bread at home?", "refused", None, None),
        ("How large can the cache grow?", "answered", -1, "It should say how to change the limit"),
    ]

    at.sidebar.radio(key="view").set_value("Documentation gaps").run()
    assert not at.exception, at.exception
    assert at.header[0].value == "Documentation gaps" and not at.chat_input
    table = at.dataframe[0].value
    assert list(table["topic"]) == ["large cache grow", "bake sourdough bread home"], table  # the latest first
    assert list(table["refused"]) == [0, 1] and list(table["not helpful"]) == [1, 0]

    st.cache_resource.clear()  # the page closes the index: the CLI reads the same log
    out = _cli("gaps", "--index", str(index))
    assert "How do I bake sourdough bread at home?" in out.stdout and "How large can the cache grow?" in out.stdout, out


def test_with_logging_off_the_gaps_view_says_so_and_nothing_is_logged(monkeypatch, docs_index: Path, tmp_path: Path) -> None:
    index = copy_index(docs_index, tmp_path)
    for logged in index.glob("questions.sqlite*"):
        logged.unlink()
    at = open_page(monkeypatch, index, DOCSRAG_FEEDBACK__LOG_QUESTIONS="false")
    reply = ask(at, "How do I bake sourdough bread at home?")
    assert "does not seem to cover" in answer_text(reply) and not at.feedback  # nothing to rate into
    at.sidebar.radio(key="view").set_value("Documentation gaps").run()
    assert not at.exception, at.exception
    assert "Question logging is off" in at.info[0].value and "No gaps" in at.success[0].value
    assert not list(index.glob("questions.sqlite*"))
