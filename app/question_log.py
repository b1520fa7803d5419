"""The question log: every question asked of an index, its outcome and the reader's feedback (docs/asking.md
"Documentation gaps"), in ``questions.sqlite`` beside the index, tokens redacted."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from integrations.adapters.sqlite_file import open_sqlite
from integrations.redaction import redact

FILE_NAME = "questions.sqlite"
ANSWERED, WEAK, REFUSED = "answered", "weak", "refused"
MAX_TEXT = 2000  # characters kept of a question or comment

_SCHEMA = """
CREATE TABLE IF NOT EXISTS questions (
    id INTEGER PRIMARY KEY,
    asked REAL NOT NULL,
    question TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    missing_names TEXT NOT NULL DEFAULT '[]',
    sources TEXT NOT NULL DEFAULT '[]',
    best_score REAL,
    answered_by TEXT,
    rating INTEGER,
    comment TEXT
);
CREATE INDEX IF NOT EXISTS questions_asked ON questions(asked);
"""


@dataclass
class LoggedQuestion:
    id: int
    asked: float
    question: str
    outcome: str
    reason: str = ""
    missing_names: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    best_score: float | None = None
    answered_by: str | None = None
    rating: int | None = None  # 1 helpful, -1 not helpful
    comment: str | None = None


def outcome_of(weak_evidence: bool, missing_names: list[str], filtered: bool, cited: bool) -> tuple[str, str]:
    """(outcome, reason) of one question from what the query path learned about it."""
    if weak_evidence:
        return REFUSED, "filter" if filtered else "missing names" if missing_names else "no evidence"
    if missing_names:
        return WEAK, "missing names"
    return (ANSWERED, "") if cited else (WEAK, "nothing cited")


class QuestionLog:
    """The question log of one index directory; safe to share between threads."""

    def __init__(self, path: str | Path, secrets: tuple[str, ...] = ()) -> None:
        self.path = Path(path)
        self._secrets = tuple(s for s in secrets if s)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    @classmethod
    def beside(cls, index_dir: Path, secrets: tuple[str, ...] = ()) -> QuestionLog:
        """The log of an index directory; the file is created by the first question, reading creates nothing."""
        return cls(index_dir / FILE_NAME, secrets)

    def _db(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is None and (create or self.path.is_file()):
            if create:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._conn = open_sqlite(self.path, _SCHEMA)
            except sqlite3.Error as exc:
                raise ValueError(f"cannot open the question log {self.path}: {exc}; move it away to start a new one") from exc
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)[:MAX_TEXT]

    def record(
        self,
        question: str,
        outcome: str,
        reason: str = "",
        missing_names: list[str] | None = None,
        sources: list[str] | None = None,
        best_score: float | None = None,
        answered_by: str | None = None,
        asked: float | None = None,
    ) -> int:
        """Log one question; returns its id (for :meth:`update` and :meth:`feedback`)."""
        row = (
            time.time() if asked is None else asked,
            self._clean(question),
            outcome,
            reason,
            json.dumps([self._clean(n) for n in missing_names or []]),
            json.dumps(sources or []),
            best_score,
            answered_by,
        )
        with self._lock:
            cursor = self._db(create=True).execute(
                "INSERT INTO questions (asked, question, outcome, reason, missing_names, sources, best_score, answered_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return int(cursor.lastrowid)

    def update(self, question_id: int, outcome: str, reason: str, sources: list[str], answered_by: str | None) -> None:
        """Settle a streamed answer's outcome once its last token (and so its citations) is known."""
        with self._lock:
            self._db(create=True).execute(
                "UPDATE questions SET outcome = ?, reason = ?, sources = ?, answered_by = ? WHERE id = ?",
                (outcome, reason, json.dumps(sources), answered_by, question_id),
            )

    def feedback(self, question_id: int, helpful: bool, comment: str = "") -> None:
        """The reader's 👍 (helpful) or 👎 on an answer, with an optional comment."""
        with self._lock:
            self._db(create=True).execute(
                "UPDATE questions SET rating = ?, comment = ? WHERE id = ?",
                (1 if helpful else -1, self._clean(comment.strip()) or None, question_id),
            )

    def questions(self, since: float | None = None) -> list[LoggedQuestion]:
        """Logged questions, oldest first (those asked at or after ``since``, a Unix time, when given)."""
        query = "SELECT * FROM questions" + (" WHERE asked >= ?" if since is not None else "") + " ORDER BY asked, id"
        with self._lock:
            db = self._db(create=False)
            if db is None:
                return []
            cursor = db.execute(query, () if since is None else (since,))
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        out = []
        for row in rows:
            values = dict(zip(names, row, strict=True))
            values["missing_names"] = json.loads(values["missing_names"])
            values["sources"] = json.loads(values["sources"])
            out.append(LoggedQuestion(**values))
        return out
