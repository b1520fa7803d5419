"""#13 item 3: a server that echoes the Authorization header in its error bodies never gets the token shown anywhere.

The fake answers every HF route with 401 and repeats the header it received (``echo_auth``);
the token must not appear in the CLI's "skipped:" lines, the ``--json`` fallbacks, ``-v``
logs, the "could not be embedded" notice, the page's fallback warning, or ingest logs and tracebacks.
"""

from __future__ import annotations

import json
import logging

import pytest

from app.cli import main
from integrations.redaction import redact
from tests.conftest_hf import FAKE_TOKEN
from tests.test_profiles import QUESTION, docs
from tests.test_streamlit_app import docs_index  # noqa: F401 - the page tests' index, shared

LONG_TOKEN = "hf_" + "A1b2C3d4E5" * 4  # the shape of a real token (hf_ + 30+ letters and digits)


def echo_everything(server) -> None:
    server.state.echo_auth = True
    server.state.tokens.clear()  # the fake's account no longer knows the token: 401 on every HF route


def assert_clean(text: str) -> None:
    assert FAKE_TOKEN not in text and "Bearer hf_" not in text, text


def test_cli_skipped_lines_json_fallbacks_verbose_logs_and_the_embedding_notice(hf_env, tmp_path, capsys, caplog) -> None:
    assert main(["--profile", "hf_api", "ingest", str(docs(tmp_path)), "-q"]) == 0
    echo_everything(hf_env)
    capsys.readouterr()
    with caplog.at_level(logging.DEBUG):
        assert main(["--profile", "hf_api", "-v", "ask", QUESTION]) == 0
        assert main(["--profile", "hf_api", "ask", "--json", QUESTION]) == 0
    out, err = capsys.readouterr()
    assert "skipped: hf_api:Qwen/Qwen2.5-7B-Instruct-1M: HTTP 401" in out and "[redacted]" in out  # the echo was there, scrubbed
    answer = json.loads(out[out.index("{\n") :])
    assert any("HTTP 401" in str(f) for f in answer["fallbacks"])
    assert any("could not be embedded" in n for n in answer["notices"])
    for text in (out, err, caplog.text, json.dumps(answer)):
        assert_clean(text)
    assert any(r.headers.get("authorization") == f"Bearer {FAKE_TOKEN}" for r in hf_env.requests())  # it was sent, only there


def test_ingest_logs_and_messages_do_not_show_the_token(hf_env, tmp_path, capsys, caplog) -> None:
    echo_everything(hf_env)
    with caplog.at_level(logging.DEBUG):
        assert main(["--profile", "hf_api", "-v", "ingest", str(docs(tmp_path))]) == 1  # one message, no traceback
    out, err = capsys.readouterr()
    assert "HTTP 401" in err  # the echoed body is not repeated: the message is ours
    for text in (out, err, caplog.text):
        assert_clean(text)


@pytest.mark.parametrize("text", [f"authorization: Bearer {LONG_TOKEN}", f"token={LONG_TOKEN}", "BEARER abc.def"])
def test_token_shapes_are_redacted_even_when_not_the_configured_token(text) -> None:
    assert LONG_TOKEN not in redact(text) and "abc.def" not in redact(text) and "[redacted]" in redact(text)


def test_the_pages_fallback_warning_does_not_show_the_token(monkeypatch, docs_index, tmp_path, loopback) -> None:  # noqa: F811
    """Visible to every visitor of a Space."""
    from html import unescape

    from tests.test_streamlit_app import ask, copy_index, hf_env, open_page

    echo_everything(loopback)
    at = open_page(monkeypatch, copy_index(docs_index, tmp_path), **hf_env(loopback))
    reply = ask(at, "How large can the cache grow?")
    warning = unescape(reply.warning[0].value)
    assert "HTTP 401" in warning and "redacted" in warning
    assert "hf_loopback_token" not in warning and "Bearer hf_" not in warning
