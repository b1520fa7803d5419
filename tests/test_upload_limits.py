"""The page's upload store is bounded: files and bytes per session, bytes per process, released once stored.

Streamlit's own upload route (starlette) and in-memory store, served over HTTP by a test client.
"""

from __future__ import annotations

import pytest

from app.ui.upload_limits import MB, UploadLimits, _wrap


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch):
    from starlette.applications import Starlette
    from starlette.testclient import TestClient
    from streamlit import config
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager
    from streamlit.web.server.starlette.starlette_routes import create_upload_routes

    monkeypatch.setattr(
        config, "get_option", lambda key, _get=config.get_option: False if key == "server.enableXsrfProtection" else _get(key)
    )
    uploads = MemoryUploadedFileManager("/_stcore/upload_file")
    _wrap(uploads, UploadLimits(max_files=5, session_bytes=3 * MB, total_bytes=5 * MB))

    class Sessions:  # every session id is a live session
        @staticmethod
        def is_active_session(session_id: str) -> bool:
            return True

    client = TestClient(Starlette(routes=create_upload_routes(Sessions(), uploads, None)))

    def put(session: str, file_id: str, size: int):
        return client.put(f"/_stcore/upload_file/{session}/{file_id}", files={"file": ("a.md", b"x" * size, "text/markdown")})

    uploads.put = put
    return uploads


def held(store) -> int:
    stats = store.get_stats()
    return sum(s.byte_length for s in stats.get("cache_memory_bytes", [])) if stats else 0


def test_one_session_cannot_hold_more_than_its_share_and_gets_it_back_once_stored(store) -> None:
    codes = [store.put("s1", f"f{n}", MB).status_code for n in range(30)]  # 30 PUTs of 1 MB: 3 fit
    assert codes[:3] == [204] * 3 and set(codes[3:]) == {413}
    assert held(store) == 3 * MB
    refused = store.put("s1", "more", 10)
    assert "add them to the index first" in refused.text

    assert store.put("s1", "f0", MB // 2).status_code == 204  # the same file sent again replaces itself
    store.remove_session_files("s1")  # what the page does once the uploads are written to uploads/
    assert held(store) == 0
    assert [store.put("s1", f"g{n}", 10).status_code for n in range(6)] == [204] * 5 + [413]  # at most 5 files
    assert "5 uploads (the limit)" in store.put("s1", "g9", 10).text


def test_all_sessions_together_stay_under_the_process_limit(store) -> None:
    assert [store.put(f"s{n}", "f", 2 * MB).status_code for n in range(4)] == [204, 204, 413, 413]
    assert "the page's uploads would hold over 5 MB" in store.put("s9", "f", 2 * MB).text
    store.remove_file("s0", "f")  # the widget's delete
    assert store.put("s2", "f", 2 * MB).status_code == 204
