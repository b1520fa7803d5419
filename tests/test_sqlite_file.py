"""The SQLite files (manifest, key-value store, usage meter) share one opening: WAL, a schema version, newer files refused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from app.manifest import Manifest, OldIndexError
from integrations.adapters.sqlite_kvstore import SQLiteKVStore
from integrations.usage_meter import UsageMeter
from settings.model import BudgetSettings, ModelPrice


def open_each(path: Path, kind: str):
    if kind == "manifest":
        return Manifest(path)
    if kind == "kvstore":
        return SQLiteKVStore(path)
    return UsageMeter(path, BudgetSettings(prices={}, default_price=ModelPrice(), monthly_cap_usd=1.0))


@pytest.mark.parametrize("kind", ["manifest", "kvstore", "meter"])
def test_a_file_from_a_newer_schema_is_refused_naming_it_and_left_as_it_was(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"{kind}.sqlite"
    open_each(path, kind).close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        conn.execute("CREATE TABLE from_the_future (x)")
        conn.execute("PRAGMA user_version = 2")
    with pytest.raises(ValueError, match=rf"{kind}\.sqlite has schema version 2.*upgrade docsrag"):
        open_each(path, kind)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert "from_the_future" in {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}


def test_a_file_written_before_versions_were_stamped_still_opens_with_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "docstore.sqlite"
    store = SQLiteKVStore(path)
    store.put("node-1", {"text": "kept"})
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 0")
    reopened = SQLiteKVStore(path)
    assert reopened.get("node-1") == {"text": "kept"}
    reopened.close()


def test_a_refused_manifest_is_not_written_to(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    with sqlite3.connect(path) as conn:  # a manifest keyed by file name, as earlier versions wrote it
        conn.execute("CREATE TABLE files (source TEXT PRIMARY KEY, root TEXT NOT NULL)")
    with pytest.raises(OldIndexError):
        Manifest(path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert [row[0] for row in conn.execute("SELECT name FROM sqlite_master")] == ["files", "sqlite_autoindex_files_1"]


@pytest.mark.parametrize("kind", ["manifest", "kvstore", "meter"])
def test_reopening_a_set_up_file_does_not_wait_for_a_writer(tmp_path: Path, kind: str) -> None:
    # The page reopens the manifest on each run while an upload's ingest holds write transactions.
    path = tmp_path / f"{kind}.sqlite"
    open_each(path, kind).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    outcome: list[object] = []

    def reopen() -> None:
        try:
            open_each(path, kind).close()
            outcome.append("opened")
        except Exception as exc:  # noqa: BLE001 - the failure is the assertion below
            outcome.append(exc)

    thread = threading.Thread(target=reopen, daemon=True)
    thread.start()
    thread.join(timeout=5)
    opened_beside_the_writer = list(outcome)
    writer.execute("COMMIT")
    writer.close()
    thread.join()
    assert opened_beside_the_writer == ["opened"], outcome
