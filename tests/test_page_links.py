"""What the page may link and how it shows names: only http(s) links of its own, no e-mail autolinks, no bidi reordering."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app.ui.safe_markdown import escape, passage, snippet

# GFM's extended autolinks (remark-gfm, as Streamlit renders Markdown): an e-mail address after parsing, escapes gone.
GFM_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
TEXT = "Write to ops@example.com or mailto:root@host.org for access; `admin@code.example` in code stays code."


def as_gfm_sees_it(markdown: str) -> str:
    return re.sub(r"`[^`]*`", "", re.sub(r"\\(.)", r"\1", markdown))  # backslash escapes resolved, code spans left out


@pytest.mark.parametrize("render", [escape, passage, snippet, lambda text: snippet(text, "who gets access?")])
def test_e_mail_addresses_in_documents_answers_and_questions_are_not_links(render) -> None:
    shown = render(TEXT)
    assert GFM_EMAIL.findall(as_gfm_sees_it(shown)) == [], shown
    assert "ops@\u2060example" in shown.replace("\\", "")
    assert render is escape or "`admin@code.example`" in shown  # code spans are shown as code (escape: all literal)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "data:text/html,x", "ftp://e.org/docs", "docs.example.org"])
def test_a_base_url_that_is_not_a_web_address_is_refused_with_the_setting_named(url: str) -> None:
    from settings import load_settings

    with pytest.raises(ValueError, match=r"sources\.base_url must be an http:// or https:// address"):
        load_settings("local", sources={"base_url": url})
    assert load_settings("local", sources={"base_url": " https://docs.example.org/en/ "}).sources.base_url == "https://docs.example.org/en/"


def test_a_name_with_a_right_to_left_override_is_shown_as_written_not_reordered(ingestor, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "invoice_\u202efdp.md").write_text("# Invoice\n\nThe invoice total is 40 euros.\n", encoding="utf-8")
    report = ingestor.ingest(docs)
    assert report.ingested == ["invoice_\\u202efdp.md"]  # the name stored, printed and cited
    assert escape("invoice_\u202efdp.md") == "invoice\\_\\\\u202efdp\\.md"  # an old index's name on the page
    assert not re.search("[\u202a-\u202e\u2066-\u2069]", escape("a\u2067b\u202ac"))
