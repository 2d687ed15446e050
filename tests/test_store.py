"""The SQLite store: schema versions and migrations, WAL, one-line errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from engine.store import SCHEMA_VERSION, Store, StoreError


def _make_version_1(path: Path) -> None:
    """A file as leafe's schema version 1 wrote it (before re-branches and the edit history)."""
    store = Store(path)
    run_id, node = store.create_run("path/abc", "path", "m", "scripted", {"budget": 2}, "start")
    branch = store.add_branch(run_id, "rollback", node.id, 1, rollback_step=1, summary="generated")
    store.close()
    with sqlite3.connect(path) as conn:
        _drop_training_tables(conn)
        conn.execute("drop table summary_edits")
        conn.execute("alter table branches drop column origin")
        conn.execute("alter table branches drop column rebranch_of")
        conn.execute(
            "update branches set summary_edited = 'edited', summary_edited_at = 't' where id = ?", [branch.id]
        )
        conn.execute("update meta set value = '1' where key = 'schema_version'")


def _drop_training_tables(conn: sqlite3.Connection) -> None:
    for table in ("adapters", "train_metrics", "train_jobs", "dataset_examples", "datasets"):
        conn.execute(f"drop table {table}")


def test_version_2_file_gains_the_training_tables(tmp_path: Path) -> None:
    path = tmp_path / "v2.db"
    store = Store(path)
    run_id, _ = store.create_run("path/abc", "path", "m", "scripted", {}, "start")
    store.close()
    with sqlite3.connect(path) as conn:
        _drop_training_tables(conn)
        conn.execute("update meta set value = '2' where key = 'schema_version'")
    store = Store(path)
    assert store.get_run(run_id)["task_id"] == "path/abc"
    job = store.create_job(dataset_id=None, dataset_path="d.jsonl", base="m", method="lora", config={})
    assert store.job(job)["status"] == "queued"


def test_version_1_file_is_migrated_without_losing_anything(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _make_version_1(path)
    store = Store(path)
    version = next(store.db.query("select value from meta where key = 'schema_version'"))["value"]
    assert int(version) == SCHEMA_VERSION
    root, branch = store.branches(1)
    assert (root.origin, branch.origin, branch.rebranch_of) == ("explorer", "explorer", None)
    assert (branch.summary, branch.summary_edited) == ("generated", "edited")
    assert [e["text"] for e in store.summary_edits(branch.id)] == ["edited"]
    store.edit_summary(branch.id, "again")  # the new table works
    assert len(store.summary_edits(branch.id)) == 2


def test_newer_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    Store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("update meta set value = '99' where key = 'schema_version'")
    with pytest.raises(StoreError, match="newer than this leafe"):
        Store(path)


def test_wal_and_foreign_keys_are_on(store: Store) -> None:
    assert store.db.execute("pragma journal_mode").fetchone()[0] == "wal"
    assert store.db.execute("pragma foreign_keys").fetchone()[0] == 1


def test_not_a_database_and_missing_file_are_one_line_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("this is not sqlite " * 100)
    with pytest.raises(StoreError, match="not a leafe database"):
        Store(junk)
    with pytest.raises(StoreError, match="no database at"):
        Store(tmp_path / "missing.db", create=False)
    with pytest.raises(StoreError, match="is a folder"):
        Store(tmp_path)


def test_an_unknown_branch_is_leafes_own_not_found_error(store: Store) -> None:
    from engine.errors import LeafeError, NotFoundError

    with pytest.raises(NotFoundError, match="no branch 42") as caught:
        store.branch(42)
    assert isinstance(caught.value, LeafeError)  # was sqlite-utils' own NotFoundError
