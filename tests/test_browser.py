"""The real page in a real browser: `streamlit run` on a free port, driven by headless Debian Chromium through Selenium.

Needs the Debian packages `chromium` and `chromium-driver` (GUIDE §6b) and `selenium` from PyPI.
Screenshots land in tests/artifacts/ (not committed) for a person to look at:
browser_answer.png (an answer with cited sources in order), browser_passage.png (a passage rendered as Markdown, its
image shown as its alt text), browser_pdf_link.png (a PDF source with its page link), browser_upload_progress.png (an upload's
progress while a question is answered), browser_busy.png (a second session told when the running upload ends),
browser_upload_done.png (the outcome, the uploader emptied), browser_previews.png (clean previews of uncited passages),
browser_feedback.png (👍/👎 under an answer, a comment given), browser_gaps.png (the "Documentation gaps" view),
browser_wide_passage.png (a passage's wide table scrolling inside its own box).
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests import docfactory
from tests.chromium import chromium_available, free_port, start_chromium, wait_http
from tests.conftest import REPO
from tests.test_ingestion import GUIDE, write
from tests.test_streamlit_app import PROXY

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "tests" / "artifacts"
CHAT_INPUT = "textarea[data-testid='stChatInputTextArea']"
MESSAGE = "[data-testid='stChatMessage']"
STARTUP_TIMEOUT_S = 60
ANSWER_TIMEOUT_S = 90
RELAY = """# Relay daemon

## Status badge

The relay status badge shows whether the relay daemon is healthy: ![relay status]({url}/exfil.png?leak=secret).
Raw HTML is shown as text too: <img src="{url}/html.png"> and [the status page]({url}/page).

Start the relay with `relayd --port 7000 --index DIR` and check it with the table below.

| option | default |
| --- | --- |
| `--port` | 7000 |

```sh
relayd --port 7000 --index /srv/relay
```
"""


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def exfil_server():
    """An HTTP server on 127.0.0.1 that records every request: a document's image must never reach it."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Recorder)
    server.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def big_guide(sections: int) -> str:
    """A long Markdown manual (about two chunks per section) so that an upload takes long enough to watch."""
    body = " ".join(f"Parameter p{n} tunes stage {n} of the pipeline and accepts values from 1 to {n + 10}." for n in range(12))
    return "# Big manual\n\n" + "\n\n".join(f"## Section {n}\n\n{body}" for n in range(sections)) + "\n"


@pytest.fixture
def small_index(tmp_path: Path, exfil_server) -> Path:
    """Built by the CLI in its own process: Milvus Lite keeps an index locked until its process exits."""
    docs = tmp_path / "docs"
    write(docs / "widget.md", GUIDE)
    write(docs / "proxy.md", PROXY)
    write(docs / "relay.md", RELAY.format(url=f"http://127.0.0.1:{exfil_server.server_port}"))
    docfactory.make_manual_pdf(docs / "manual.pdf")
    index = tmp_path / "index"
    subprocess.run([sys.executable, "-m", "app", "ingest", str(docs), "--index", str(index), "-q"], cwd=REPO, check=True)
    return index


@contextlib.contextmanager
def serve_page(index: Path, tmp_path: Path) -> Iterator[str]:
    """`streamlit run streamlit_app.py` on a free port over ``index``; yields the page's URL."""
    port = free_port()
    env = {**os.environ, "DOCSRAG_STORAGE__INDEX_DIR": str(index)}
    command = [
        str(Path(sys.executable).parent / "streamlit"), "run", "streamlit_app.py", "--server.headless", "true",
        "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with (tmp_path / "streamlit.log").open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, STARTUP_TIMEOUT_S, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


@pytest.fixture
def page_url(small_index: Path, tmp_path: Path) -> Iterator[str]:
    with serve_page(small_index, tmp_path) as url:
        yield url


@pytest.fixture
def browser(tmp_path: Path):
    if not chromium_available():
        pytest.skip("needs Debian chromium and chromium-driver: apt-get update && apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium==4.51.0)")
    driver = start_chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


def by_css(root, css: str):
    from selenium.webdriver.common.by import By

    return root.find_elements(By.CSS_SELECTOR, css)


def wait_for(driver, condition, timeout: float = ANSWER_TIMEOUT_S):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # Streamlit re-renders the page on each run: an element read mid-render is stale, and the next poll reads it anew.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.1, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(lambda d: condition(d))


def click(driver, element) -> None:
    """A real click, retried while something else covers the element (the chat input, a re-render still scrolling)."""
    from selenium.common.exceptions import ElementClickInterceptedException
    from selenium.webdriver.support.ui import WebDriverWait

    def clicked(d) -> bool:
        d.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()
        return True

    WebDriverWait(driver, 10, poll_frequency=0.2, ignored_exceptions=[ElementClickInterceptedException]).until(clicked)


def ask(driver, question: str):
    """Send a question and return its finished assistant message."""
    from selenium.webdriver.common.keys import Keys

    before = len(by_css(driver, MESSAGE))
    box = wait_for(driver, lambda d: next(iter(by_css(d, CHAT_INPUT)), None), STARTUP_TIMEOUT_S)
    box.send_keys(question)
    box.send_keys(Keys.ENTER)

    def finished(d):
        messages = by_css(d, MESSAGE)
        return len(messages) >= before + 2 and re.search(r"· total [\d,]+ ms", messages[-1].text)  # the timings line comes last

    wait_for(driver, finished)
    return by_css(driver, MESSAGE)[-1]


def shot(driver, name: str, element=None) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    if element is not None:
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    assert driver.save_screenshot(str(ARTIFACTS / name))


def add_button(driver):
    return next(b for b in by_css(driver, "[data-testid='stSidebar'] button") if b.text == "Add to index")


def click_add(driver) -> None:
    """Press "Add to index" once the page has seen the chosen files (the button is enabled by a rerun)."""
    from selenium.common.exceptions import StaleElementReferenceException

    def press(d) -> bool:
        try:
            button = add_button(d)
            if not button.is_enabled():
                return False
            button.click()
            return True
        except (StopIteration, StaleElementReferenceException):  # the rerun replaced the sidebar meanwhile
            return False

    wait_for(driver, press, 30)


def test_answers_cite_in_order_and_render_passages_as_markdown_without_live_content(browser, page_url: str, exfil_server) -> None:
    browser.get(page_url)
    reply = ask(browser, "What does the relay status badge show?")

    # Citations read in order: the cited sources carry the answer's numbers, in order; uncited ones are unnumbered.
    answer = by_css(reply, "[data-testid='stMarkdownContainer']")[0].text
    markers = [int(n) for n in re.findall(r"\[(\d+)\]", answer)]
    cited = [int(m.group(1)) for t in (e.text for e in by_css(reply, "strong")) if (m := re.match(r"\[(\d+)\] ", t))]
    assert markers and cited == sorted(set(markers)), (answer, cited)
    assert re.match(
        r"\[\d+\] relay\.md — Relay daemon > Status badge", next(e.text for e in by_css(reply, "strong") if "relay.md" in e.text)
    )
    uncited = next(e for e in by_css(reply, "details") if "retrieved but not cited" in e.text)
    folded = [e.get_attribute("textContent") for e in by_css(uncited, "strong")]
    assert folded and not any(t.startswith("[") for t in folded), folded  # uncited passages follow unnumbered
    shot(browser, "browser_answer.png", reply)

    # The full passage reads like the docs: a demoted heading, code as code (whole, not split by highlights), a table.
    from selenium.webdriver.common.by import By

    expander = reply.find_element(By.XPATH, ".//strong[contains(., 'relay.md')]/following::details[1]")
    assert "Full passage" in expander.text
    by_css(expander, "summary")[0].click()
    body = wait_for(
        browser,
        lambda d: next(
            (b for b in by_css(expander, "[data-testid='stExpanderDetails'] [data-testid='stMarkdownContainer']") if b.is_displayed()), None
        ),
        10,
    )
    assert by_css(body, "table"), body.text

    def codes(_) -> list[str]:  # code blocks load their highlighter lazily (a skeleton first)
        found = [c.get_attribute("textContent") for c in by_css(body, "code")]
        return found if any("relayd --port 7000 --index /srv/relay" in c for c in found) else []

    found = wait_for(browser, codes, 20)
    assert "relayd --port 7000 --index DIR" in found, found  # the inline code span is whole
    # The document's image, raw HTML and link are text: nothing is loaded or linked.
    shown = body.text.replace("\u2060", "")
    assert "[image: relay status]" in shown and '<img src="http://127.0.0.1:' in shown, shown
    assert f"the status page (http://127.0.0.1:{exfil_server.server_port}/page)" in shown, shown
    assert f"127.0.0.1:{exfil_server.server_port}" not in "".join(
        (e.get_attribute("src") or "") + (e.get_attribute("href") or "") for e in by_css(browser, "img, a, iframe, source")
    )
    assert "html.png" in browser.page_source  # shown as text...
    shot(browser, "browser_passage.png", expander)
    time.sleep(1)
    assert exfil_server.paths == []  # ...and never requested

    # Deep link: the PDF source opens at its page, served by the page itself.
    reply = ask(browser, "How do I start the widget daemon?")
    link = next(a for a in by_css(reply, "a") if a.text.startswith("open"))
    href = link.get_attribute("href")
    assert re.search(r"/media/[0-9a-f]+\.pdf#page=6$", href), href
    with urllib.request.urlopen(href.split("#")[0], timeout=10) as served:
        assert served.headers["Content-Type"] == "application/pdf" and served.read(5) == b"%PDF-"
    shot(browser, "browser_pdf_link.png", link)

    # A Markdown source opens as text at its heading (a text fragment), served by the page.
    reply = ask(browser, "How long may a proxy connection stay idle?")
    link = next(a for a in by_css(reply, "a") if a.text.startswith("open"))
    href = link.get_attribute("href")
    assert re.search(r"/media/[0-9a-f]+\.txt#:~:text=Idle%20(timeout|connections)$", href), href
    with urllib.request.urlopen(href.split("#")[0], timeout=10) as served:
        assert served.headers["Content-Type"].startswith("text/plain") and served.read().decode() == PROXY


def test_an_upload_shows_moving_progress_that_a_question_does_not_hide(browser, page_url: str, tmp_path: Path) -> None:
    big = write(tmp_path / "upload" / "big_manual.md", big_guide(200))
    small = write(tmp_path / "upload" / "later.md", "# Later\n\nThe later guide.\n")
    browser.get(page_url)
    sidebar = wait_for(browser, lambda d: next(iter(by_css(d, "[data-testid='stSidebar']")), None), STARTUP_TIMEOUT_S)
    wait_for(browser, lambda d: by_css(sidebar, "input[type='file']"), STARTUP_TIMEOUT_S)[0].send_keys(str(big))
    click_add(browser)

    def progress_text(d) -> str:
        bars = by_css(d, "[data-testid='stSidebar'] [data-testid='stProgress']")
        return bars[0].text if bars else ""

    # The uploader is emptied and the progress counts chunks embedded, with the time left: while the file is read and
    # stored with its keywords, by megabytes; then, searchable by keywords, by its chunks embedded of a known total.
    first = wait_for(browser, lambda d: (t := progress_text(d)) and "chunks embedded" in t and t, 60)
    reading = r"uploads: 0 of 1 files done · [\d,]+ chunks embedded · [\d.]+ of [\d.]+ MB"
    embedding = r"uploads: 1 file searchable by keywords · [\d,]+ of ([\d,]+) chunks embedded · "
    assert re.search(reading, first) or re.search(embedding, first), first
    assert "big_manual.md" not in by_css(browser, "[data-testid='stSidebar'] [data-testid='stFileUploader']")[0].text
    assert not add_button(browser).is_enabled()

    # A question asked meanwhile is answered while the progress stays and keeps moving.
    reply = ask(browser, "How long may a proxy connection stay idle?")
    assert "90 seconds" in reply.text
    during = progress_text(browser)
    assert "chunks embedded" in during and "left" in during, during
    later = wait_for(browser, lambda d: (t := progress_text(d)) and t != during and t, 30)
    shot(browser, "browser_upload_progress.png", by_css(browser, "[data-testid='stSidebar'] [data-testid='stProgress']")[0])
    embedded = [int(re.search(r"([\d,]+)(?: of [\d,]+)? chunks embedded", t).group(1).replace(",", "")) for t in (during, later)]
    assert embedded[1] >= embedded[0], (during, later)
    # Each total is known before its count starts and never moves: the megabytes to read, then the chunks to embed.
    total_mb = {m.group(1) for t in (first, during, later) if (m := re.search(r"of ([\d.]+) MB", t))}
    total_chunks = {m.group(1) for t in (first, during, later) if (m := re.search(embedding, t))}
    assert len(total_mb) <= 1 and len(total_chunks) <= 1, (first, during, later)

    # Another session's upload is told when the running one will finish, and keeps its file.
    first_window = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(page_url)
    other = wait_for(browser, lambda d: next(iter(by_css(d, "[data-testid='stSidebar'] input[type='file']")), None), STARTUP_TIMEOUT_S)
    other.send_keys(str(small))
    click_add(browser)
    busy = wait_for(browser, lambda d: next((e for e in by_css(d, "[data-testid='stAlert']") if "Another ingestion" in e.text), None), 30)
    assert re.search(r"running \(uploads: .* (about .* left|estimating the time left)\)", busy.text), busy.text
    assert "later.md" in by_css(browser, "[data-testid='stSidebar'] [data-testid='stFileUploader']")[0].text
    shot(browser, "browser_busy.png", busy)
    browser.close()
    browser.switch_to.window(first_window)

    # When it ends: the outcome, the new file in the library, and the question and answer still there.
    done = wait_for(
        browser, lambda d: next((e for e in by_css(d, "[data-testid='stAlert']") if "uploads: 1 ingested" in e.text), None), 300
    )
    # The library is written after the outcome in the same run: wait for that run to reach it.
    wait_for(browser, lambda d: "5 files" in by_css(d, "[data-testid='stSidebar']")[0].text, 30)
    assert not progress_text(browser)
    assert "90 seconds" in by_css(browser, MESSAGE)[-1].text
    shot(browser, "browser_upload_done.png", done)
    shot(browser, "browser_library.png", by_css(browser, "[data-testid='stSidebar'] [data-testid='stDataFrame']")[0])


def test_feedback_buttons_and_the_documentation_gaps_view(browser, page_url: str) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(page_url)
    refused = ask(browser, "How do I bake sourdough bread at home?")
    assert "does not seem to cover" in refused.text
    reply = ask(browser, "How long may a proxy connection stay idle?")
    assert "90 seconds" in reply.text
    # Previews read like the rendered docs: no escape characters, fences or emphasis marks, even for passages quoted
    # from their opening (the relay's, with a code block and a table).
    uncited = next(e for e in by_css(reply, "details") if "retrieved but not cited" in e.text)
    click(browser, by_css(uncited, "summary")[0])
    quotes = wait_for(browser, lambda d: [q.text for q in by_css(uncited, "blockquote") if q.is_displayed()], 10)
    assert quotes
    assert not any("\\" in q or "```" in q or "**" in q for q in quotes), quotes
    assert browser.execute_script("return document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    shot(browser, "browser_previews.png", uncited)
    # The rating buttons come after the timings line (which ends ask()).
    thumbs = wait_for(browser, lambda d: by_css(by_css(d, MESSAGE)[-1], "[data-testid='stFeedback'] button"), 30)
    assert len(thumbs) == 2, [t.get_attribute("outerHTML")[:200] for t in thumbs]
    click(browser, thumbs[1])  # 👎: a long answer can leave the buttons under the page's fixed chat input
    comment = wait_for(browser, lambda d: next(iter(by_css(by_css(d, MESSAGE)[-1], "input[type='text']")), None), 30)
    comment.send_keys("Say where idle_timeout is documented" + Keys.ENTER)
    wait_for(browser, lambda d: "documentation-gaps report" in by_css(d, MESSAGE)[-1].text, 30)
    shot(browser, "browser_feedback.png", by_css(by_css(browser, MESSAGE)[-1], "[data-testid='stFeedback']")[0])

    view = next(label for label in by_css(browser, "[data-testid='stSidebar'] label") if label.text == "Documentation gaps")
    click(browser, view)
    wait_for(browser, lambda d: any(h.text.startswith("Documentation gaps") for h in by_css(d, "h2")), 30)

    def gaps(d) -> list[str]:
        shown = [e.text for e in by_css(d, "[data-testid='stMain'] [data-testid='stExpander'] summary")]
        return shown if len(shown) == 2 and by_css(d, "[data-testid='stMain'] [data-testid='stDataFrame']") else []

    expanders = wait_for(browser, gaps, 30)
    assert any("bake sourdough bread home · 1 question" in t for t in expanders), expanders
    assert any("long may proxy connection stay idle · 1 question" in t for t in expanders), expanders  # rated 👎
    assert not by_css(browser, CHAT_INPUT)
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, "browser_gaps.png")


WIDE = (
    "# Wide\n\n## Paths\n\nThe wide guide stores its cache in " + "/very/long/path/segment" * 30 + " and more text follows.\n\n"
    "| option | default |\n| --- | --- |\n| `" + "x" * 200 + "` | 1 |\n"
)


def test_expanded_passages_with_a_wide_table_never_scroll_the_page_sideways(browser, tmp_path: Path) -> None:
    write(tmp_path / "wide" / "wide.md", WIDE)
    index = tmp_path / "wide-index"
    subprocess.run([sys.executable, "-m", "app", "ingest", str(tmp_path / "wide"), "--index", str(index), "-q"], cwd=REPO, check=True)
    overflowing = (
        "return Array.from(document.querySelectorAll('[data-testid=stAppScrollToBottomContainer], html, body'))"
        ".filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.getAttribute('data-testid') || e.tagName)"
    )
    with serve_page(index, tmp_path) as url:
        browser.get(url)
        reply = ask(browser, "Where does the wide guide store its cache?")
        for summary in by_css(reply, "summary"):  # by script: the chat input may cover the lowest one
            browser.execute_script("arguments[0].click()", summary)
        wait_for(browser, lambda d: any(t.is_displayed() for t in by_css(reply, "table")), 10)
        time.sleep(3)  # the expanded passages lay out after they show (the overflow, before the fix, came ~1 s later)
        assert browser.execute_script(overflowing) == []  # the table scrolls inside its own box
        shot(browser, "browser_wide_passage.png", next(t for t in by_css(reply, "table") if t.is_displayed()))
