"""Bounds on what the page's upload store holds in memory: files and bytes per browser session, bytes per process.

Streamlit keeps every upload in memory until the session ends and ``server.maxUploadSize`` bounds one file only, so the
store's ``add_file`` refuses an upload past the limits with HTTP 413 (docs/security.md)."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field

MB = 1024 * 1024


@dataclass
class UploadLimits:
    max_files: int  # per session
    session_bytes: int
    total_bytes: int  # every session of the process
    _sizes: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(dict))  # session -> file id -> bytes
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, session_id: str, file_id: str, size: int) -> str | None:
        """Record an upload, or say why it is refused."""
        with self._lock:
            held = self._sizes[session_id]
            others = sum(n for f, n in held.items() if f != file_id)
            total = sum(sum(files.values()) for files in self._sizes.values()) - held.get(file_id, 0)
            if file_id not in held and len(held) >= self.max_files:
                return f"this page session already holds {len(held)} uploads (the limit): add them to the index, then upload more"
            if others + size > self.session_bytes:
                return f"this page session's uploads would hold over {self.session_bytes // MB} MB: add them to the index first"
            if total + size > self.total_bytes:
                return f"the page's uploads would hold over {self.total_bytes // MB} MB: try again once others are indexed"
            held[file_id] = size
            return None

    def forget(self, session_id: str, file_id: str | None = None) -> None:
        with self._lock:
            if file_id is None:
                self._sizes.pop(session_id, None)
            else:
                self._sizes.get(session_id, {}).pop(file_id, None)


def bound_uploads(max_files: int, session_mb: float, total_mb: float) -> UploadLimits | None:
    """Put the limits on this process's upload store (once; later calls update them). None outside a Streamlit server."""
    from streamlit import runtime

    if not runtime.exists():
        return None
    store = runtime.get_instance().uploaded_file_mgr
    limits: UploadLimits | None = getattr(store, "docsrag_limits", None)
    if limits is None:
        limits = UploadLimits(max_files, int(session_mb * MB), int(total_mb * MB))
        _wrap(store, limits)
    limits.max_files, limits.session_bytes, limits.total_bytes = max_files, int(session_mb * MB), int(total_mb * MB)
    return limits


def _wrap(store, limits: UploadLimits) -> None:
    from starlette.exceptions import HTTPException

    add_file, remove_file, remove_session_files = store.add_file, store.remove_file, store.remove_session_files

    def bounded_add(session_id: str, file) -> None:
        refused = limits.admit(session_id, file.file_id, len(file.data))
        if refused:
            raise HTTPException(status_code=413, detail=refused)
        add_file(session_id, file)

    def tracked_remove(session_id: str, file_id: str) -> None:
        remove_file(session_id, file_id)
        limits.forget(session_id, file_id)

    def tracked_remove_session(session_id: str) -> None:
        remove_session_files(session_id)
        limits.forget(session_id)

    # The upload route holds this very object, so its methods are replaced on the instance.
    store.add_file, store.remove_file, store.remove_session_files = bounded_add, tracked_remove, tracked_remove_session
    store.docsrag_limits = limits


def release_session_uploads() -> None:
    """Drop this session's uploads from memory (called once they are written to the uploads folder)."""
    from streamlit import runtime
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    context = get_script_run_ctx()
    if runtime.exists() and context is not None:
        runtime.get_instance().uploaded_file_mgr.remove_session_files(context.session_id)
