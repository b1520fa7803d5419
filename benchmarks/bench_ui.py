"""Page start-up and time to first streamed token, measured in headless Chromium.

    .venv/bin/python benchmarks/bench_ui.py [--index DIR] [--runs 3] [--loopback] [--json]

Each run starts ``streamlit run streamlit_app.py`` (as ``make run`` does) on a
free port against an existing index and measures, from process start:

- ``http_ok_s``: ``GET /`` answers 200;
- ``usable_s``: the chat input is present in the page (the index is open);

then, in the same page, asks a question and measures from pressing Enter:

- ``first_token_s``: the first answer text appears in the assistant message;
- ``answered_s``: the answer is complete ("Answered by" shown, or "Not answered" for a refusal);
- ``warm_first_token_s``: the same for a second question (models loaded).

The browser is started before the timer (it is not part of the page's start-up).
Without ``--index`` a temporary index of the repo's docs/ folder is built first
(not timed). ``--loopback`` answers through tests/loopback_server.py (the HF
router protocol on 127.0.0.1) instead of the extractive default, so the
first-token time includes a real streamed HTTP answer.
Needs /usr/bin/chromium, /usr/bin/chromedriver and selenium (see tests/test_browser.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.chromium import chromium_available, free_port, start_chromium, wait_http  # noqa: E402

CHAT_INPUT = "textarea[data-testid='stChatInputTextArea']"
QUESTIONS = ("How do I ingest a folder?", "How do I restrict a question to some files?")
# Time of the first non-empty answer text in the newest assistant message (spinner text excluded).
WATCH_FIRST_TOKEN = """
window.__firstToken = null;
window.__asked = performance.now();
const seen = document.querySelectorAll('[data-testid="stChatMessageAvatarAssistant"]').length;
const observer = new MutationObserver(() => {
  const avatars = document.querySelectorAll('[data-testid="stChatMessageAvatarAssistant"]');
  if (window.__firstToken !== null || avatars.length <= seen) return;
  const message = avatars[avatars.length - 1].closest('[data-testid="stChatMessage"]');
  for (const block of message.querySelectorAll('[data-testid="stMarkdownContainer"]')) {
    if (!block.closest('[data-testid="stSpinner"]') && block.innerText.trim()) {
      window.__firstToken = performance.now();
      observer.disconnect();
      return;
    }
  }
});
observer.observe(document.body, {subtree: true, childList: true, characterData: true});
"""


def build_index(index: Path) -> None:
    subprocess.run([sys.executable, "-m", "app", "ingest", str(REPO / "docs"), "--index", str(index), "-q"], cwd=REPO, check=True)


def start_page(port: int, env: dict[str, str], log) -> subprocess.Popen:
    command = [
        str(Path(sys.executable).parent / "streamlit"), "run", "streamlit_app.py", "--server.headless", "true",
        "--server.port", str(port), "--browser.gatherUsageStats", "false",
    ]  # fmt: skip
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def ask(driver, question: str, timeout: float) -> tuple[float, float]:
    """Seconds from Enter to the first answer text and to the finished answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    def replies(d) -> int:  # finished answers and refusals
        text = d.find_element(By.TAG_NAME, "body").text
        return text.count("Answered by") + text.count("Not answered")

    answered_before = replies(driver)
    box = driver.find_element(By.CSS_SELECTOR, CHAT_INPUT)
    box.send_keys(question)
    driver.execute_script(WATCH_FIRST_TOKEN)
    box.send_keys(Keys.ENTER)
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: replies(d) > answered_before)
    done, asked, first = driver.execute_script("return [performance.now(), window.__asked, window.__firstToken];")
    return (first - asked) / 1000 if first else float("nan"), (done - asked) / 1000


def one_run(index: Path, env_extra: dict[str, str], timeout: float) -> dict[str, float]:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    env = {**os.environ, "DOCSRAG_STORAGE__INDEX_DIR": str(index), **env_extra}
    with tempfile.TemporaryDirectory() as profile, tempfile.TemporaryFile("w+") as log:
        driver = start_chromium(profile)
        started = time.monotonic()
        page = start_page(port, env, log)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, timeout)
            http_ok = time.monotonic() - started
            driver.get(url)
            WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: d.find_elements(By.CSS_SELECTOR, CHAT_INPUT))
            usable = time.monotonic() - started
            first, answered = ask(driver, QUESTIONS[0], timeout)
            warm_first, warm_answered = ask(driver, QUESTIONS[1], timeout)
        except Exception:
            with contextlib.suppress(Exception):  # the browser may be what failed
                sys.stderr.write("page text:\n" + driver.find_element(By.TAG_NAME, "body").text[-3000:] + "\n")
            log.seek(0)
            sys.stderr.write(log.read()[-3000:])
            raise
        finally:
            driver.quit()
            page.terminate()
            page.wait(timeout=20)
    return {
        "http_ok_s": http_ok,
        "usable_s": usable,
        "first_token_s": first,
        "answered_s": answered,
        "warm_first_token_s": warm_first,
        "warm_answered_s": warm_answered,
    }


def loopback_env(stack) -> dict[str, str]:
    from tests.loopback_server import LoopbackServer

    server = LoopbackServer().start()
    stack.append(server)
    return {
        "DOCSRAG_HF_TOKEN": "hf_loopback_token",
        "DOCSRAG_HF_BASE_URL": server.url,
        "DOCSRAG_LLM__CHAIN": '["hf_api"]',
        "DOCSRAG_LLM__HF_MODELS": '["loopback/chat-model"]',
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", type=Path, help="existing index directory (default: a temporary index of docs/)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per step")
    parser.add_argument("--loopback", action="store_true", help="answer through the loopback HF server")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not chromium_available():
        print("needs Debian chromium and chromium-driver: apt-get install -y chromium chromium-driver", file=sys.stderr)
        return 2

    servers: list = []
    with tempfile.TemporaryDirectory() as scratch:
        index = args.index
        if index is None:
            index = Path(scratch) / "index"
            build_index(index)
        env_extra = loopback_env(servers) if args.loopback else {}
        try:
            runs = [one_run(index.resolve(), env_extra, args.timeout) for _ in range(args.runs)]
        finally:
            for server in servers:
                server.stop()
    summary = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    result = {"runs": runs, "median": summary, "answers": "loopback hf_api" if args.loopback else "embedded default"}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"page start-up and first token ({result['answers']}, median of {len(runs)} runs)")
        for key, value in summary.items():
            print(f"  {key:<20} {value:6.2f} s   runs: {', '.join(f'{run[key]:.2f}' for run in runs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
