"""The page's memory under upload flooding: 30 direct PUTs of 49 MB to /_stcore/upload_file from one browser session.

A real page (``streamlit run streamlit_app.py`` on an empty index) and a real session (headless Chromium opens the
page and uploads one small file through the widget, which reveals the session's upload URL and XSRF cookie); then
the PUTs go straight to Streamlit's upload route, as a hostile client would send them, past the widget. Reported:
how many PUTs were stored / refused, and the page process's RSS after the PUTs and after the browser closed.
``--unbounded`` raises the page's upload limits out of reach (the behaviour before they existed).

Run: .venv/bin/python benchmarks/bench_upload_memory.py [--puts 30] [--mb 49] [--unbounded]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proc_tree import rss_mb  # noqa: E402
from tests.chromium import free_port, start_chromium, wait_http  # noqa: E402


def upload_url(driver) -> str:
    """The upload URL the page's own widget used (from Chromium's network log)."""
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            request = message["params"]["request"]
            if request["method"] == "PUT" and "/_stcore/upload_file/" in request["url"]:
                return request["url"]
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--puts", type=int, default=30)
    parser.add_argument("--mb", type=float, default=49)
    parser.add_argument("--unbounded", action="store_true", help="upload limits out of reach (the page before them)")
    args = parser.parse_args()
    import httpx
    from selenium.webdriver.common.by import By

    with tempfile.TemporaryDirectory(prefix="bench_upload_") as tmp:
        work = Path(tmp)
        small = work / "note.md"
        small.write_text("# Note\n\nA small file.\n")
        env = {**os.environ, "DOCSRAG_STORAGE__INDEX_DIR": str(work / "index")}
        if args.unbounded:
            limits = {"UPLOAD_MAX_FILES": "100000", "UPLOAD_SESSION_MB": "1000000", "UPLOAD_TOTAL_MB": "1000000"}
            env.update({f"DOCSRAG_INGESTION__{key}": value for key, value in limits.items()})
        port = free_port()
        command = [
            str(Path(sys.executable).parent / "streamlit"), "run", "streamlit_app.py", "--server.headless", "true",
            "--server.port", str(port), "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
        ]  # fmt: skip
        with (work / "streamlit.log").open("w") as log:
            page = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}/"
            wait_http(url, 120, page)
            driver = start_chromium(work / "profile", performance_log=True)
            try:
                driver.get(url)
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and not driver.find_elements(By.CSS_SELECTOR, "input[type=file]"):
                    time.sleep(0.2)
                driver.find_element(By.CSS_SELECTOR, "input[type=file]").send_keys(str(small))
                while time.monotonic() < deadline and not (put_url := upload_url(driver)):
                    time.sleep(0.2)
                session = re.search(r"/_stcore/upload_file/([^/]+)/", put_url).group(1)
                cookies = {c["name"]: c["value"] for c in driver.get_cookies()}
                xsrf = cookies.get("_streamlit_xsrf", "")
                before = rss_mb(page.pid)
                body = os.urandom(1024 * 1024) * int(args.mb)
                codes = []
                with httpx.Client(base_url=url, cookies=cookies, timeout=120) as client:
                    for _ in range(args.puts):
                        reply = client.put(
                            f"_stcore/upload_file/{session}/{uuid.uuid4()}",
                            files={"file": ("big.md", body, "text/markdown")},
                            headers={"X-Xsrftoken": xsrf},
                        )
                        codes.append(reply.status_code)
                time.sleep(2)
                after_puts = rss_mb(page.pid)
            finally:
                driver.quit()
            time.sleep(10)
            after_close = rss_mb(page.pid)
            peak = rss_mb(page.pid, "VmHWM")
        finally:
            page.terminate()
            page.wait(timeout=30)
    stored, refused = codes.count(204), sum(code == 413 for code in codes)
    mode = "unbounded" if args.unbounded else "bounded (defaults)"
    print(
        f"{mode}: {args.puts} PUTs of {args.mb:g} MB: {stored} stored, {refused} refused "
        f"(other: {sorted(set(codes) - {204, 413})}); page RSS {before:.0f} MB before, {after_puts:.0f} MB after the PUTs, "
        f"{after_close:.0f} MB 10 s after the browser closed; peak {peak:.0f} MB"
    )


if __name__ == "__main__":
    main()
