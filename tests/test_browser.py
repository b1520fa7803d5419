"""The real page in a real browser: `streamlit run` on a free port, driven by headless Debian Chromium through Selenium.

Needs the Debian packages `chromium` and `chromium-driver` (GUIDE §6b) and `selenium` from PyPI.
The screenshot lands in tests/artifacts/ (not committed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chromium import chromium_available, free_port, start_chromium, wait_http
from tests.conftest import REPO
from tests.test_ingestion import GUIDE, write
from tests.test_streamlit_app import PROXY

pytestmark = pytest.mark.browser

ARTIFACTS = REPO / "tests" / "artifacts"
SCREENSHOT = ARTIFACTS / "browser_answer.png"
CHAT_INPUT = "textarea[data-testid='stChatInputTextArea']"
STARTUP_TIMEOUT_S = 60


@pytest.fixture
def small_index(tmp_path: Path) -> Path:
    """Built by the CLI in its own process: Milvus Lite keeps an index locked until its process exits."""
    write(tmp_path / "docs" / "widget.md", GUIDE)
    write(tmp_path / "docs" / "proxy.md", PROXY)
    index = tmp_path / "index"
    subprocess.run([sys.executable, "-m", "app", "ingest", str(tmp_path / "docs"), "--index", str(index), "-q"], cwd=REPO, check=True)
    return index


@pytest.fixture
def page_url(small_index: Path, tmp_path: Path):
    port = free_port()
    env = {**os.environ, "DOCSRAG_STORAGE__INDEX_DIR": str(small_index)}
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
def browser(tmp_path: Path):
    if not chromium_available():
        pytest.skip("needs Debian chromium and chromium-driver: apt-get update && apt-get install -y chromium chromium-driver")
    pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install selenium==4.51.0)")
    driver = start_chromium(tmp_path / "chromium-profile")
    yield driver
    driver.quit()


def test_question_in_the_browser_shows_the_answer_and_its_sources(browser, page_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page_url)
    box = WebDriverWait(browser, STARTUP_TIMEOUT_S).until(lambda d: d.find_element(By.CSS_SELECTOR, CHAT_INPUT))
    box.send_keys("How long may a proxy connection stay idle?")
    box.send_keys(Keys.ENTER)
    WebDriverWait(browser, 60, poll_frequency=0.1).until(lambda d: "Answered by" in d.find_element(By.TAG_NAME, "body").text)

    messages = browser.find_elements(By.CSS_SELECTOR, "[data-testid='stChatMessage']")
    assert len(messages) == 2
    assert "How long may a proxy connection stay idle?" in messages[0].text
    answer = messages[1].find_element(By.CSS_SELECTOR, "[data-testid='stMarkdownContainer']")
    assert answer.is_displayed() and "idle timeout of 90 seconds" in answer.text
    headings = {e.text: e for e in messages[1].find_elements(By.TAG_NAME, "strong") if e.text.startswith("[")}
    source = next((e for text, e in headings.items() if re.match(r"\[\d+\] proxy\.md — Proxy server", text)), None)
    assert source is not None and source.is_displayed(), list(headings)
    assert "Answered by extractive" in messages[1].text

    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOT))
