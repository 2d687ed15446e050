"""Databases leafe must not damage or misreport: another application's SQLite file, a read-only file
or folder, and several processes creating one new file at once.

Read-only: these tests run as root on our machines, and root ignores permission bits, so a file or
folder is made read-only with the immutable attribute (``chattr +i``), which binds root too; as
another user plain ``chmod`` does. Either way SQLite really meets a file it cannot write.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import leafe_tui.explore_cmd as explore_cmd
from engine.backends.scripted import ScriptedBackend
from engine.store import SCHEMA_VERSION, Store, StoreError
from leafe_tui.cli import app
from tests.doubles import act

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert "Traceback" not in message and len(message.splitlines()) <= 2, message
    for word in words:
        assert word in message, message


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` (a file or a folder) cannot be written while the block runs, whoever we are."""
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)]).returncode != 0:
            pytest.skip("making a file read-only for root needs chattr +i (ext4, xfs, btrfs)")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        mode = path.stat().st_mode
        path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            path.chmod(mode)


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The CLI's model load, replaced by a scripted backend on the test environment (path/…)."""
    loaded: list[str] = []

    def load(request, err):
        loaded.append(request.model)
        return "scripted", ScriptedBackend(reply_fn=lambda messages: act("a"))

    monkeypatch.setattr(explore_cmd, "load_backend", load)
    return loaded


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- another application's file ---------------------------------------------------------------


def other_application(path: Path, table: str = "contacts") -> Path:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"create table {table} (id integer primary key, name text)")
        conn.execute(f"insert into {table} (name) values ('ada')")
        conn.commit()
    return path


@pytest.mark.parametrize("table", ["contacts", "runs"])
def test_runs_on_another_applications_database_leaves_it_alone(tmp_path: Path, table: str) -> None:
    db = other_application(tmp_path / "app.db", table)
    before = digest(db)
    one_line_error(invoke("runs", "--db", str(db)), "not a leafe database")
    assert digest(db) == before
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        assert tables == [table]
        assert conn.execute("pragma journal_mode").fetchone()[0] == "delete"


def test_explore_into_another_applications_database_is_refused(tmp_path: Path, loads) -> None:
    db = other_application(tmp_path / "app.db")
    before = digest(db)
    one_line_error(invoke("explore", "path/abc", "--db", str(db)), "not a leafe database")
    assert digest(db) == before and loads == []


def test_an_empty_file_becomes_a_leafe_database(tmp_path: Path) -> None:
    db = tmp_path / "empty.db"
    db.touch()
    store = Store(db)
    assert store.list_runs() == []
    store.close()


# --- read-only files and folders --------------------------------------------------------------


def leafe_database(path: Path) -> Path:
    store = Store(path)
    store.create_run("path/abc", "path", "scripted", "scripted", {"budget": 1}, "start")
    store.close()
    return path


def test_explore_into_a_read_only_database_fails_before_the_model_loads(tmp_path: Path, loads) -> None:
    db = leafe_database(tmp_path / "ro.db")
    with read_only(db):
        result = invoke("explore", "path/abc", "--db", str(db))
        listed = invoke("runs", "--db", str(db), "--json")
    one_line_error(result, "read-only")
    assert loads == []
    assert listed.exit_code == 0 and '"task_id": "path/abc"' in listed.output  # reading still works


def test_a_database_in_a_read_only_folder_is_reported_as_such(tmp_path: Path, loads) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    db = leafe_database(folder / "leafe.db")
    with read_only(folder):
        existing = invoke("runs", "--db", str(db))
        new = invoke("explore", "path/abc", "--db", str(folder / "new.db"))
    for result in (existing, new):
        one_line_error(result, "not writable")
        assert "not a leafe database" not in result.output
    assert loads == [] and not (folder / "new.db").exists()


def test_store_check_writable_passes_on_a_writable_file(store: Store) -> None:
    store.check_writable()
    with read_only(store.path), pytest.raises(StoreError, match="read-only"):
        Store(store.path).check_writable()


# --- several processes create one new database -------------------------------------------------


def _open(path: Path, start, results) -> None:
    start.wait()
    try:
        Store(path).close()
        results.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_database_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for attempt in range(3):  # the race is lost often, not always: try a few new files
        path = tmp_path / f"new-{attempt}.db"
        start, results = context.Barrier(4), context.Queue()
        processes = [context.Process(target=_open, args=(path, start, results)) for _ in range(4)]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert outcomes == ["ok"] * 4
        with contextlib.closing(sqlite3.connect(path)) as conn:
            version = conn.execute("select value from meta where key = 'schema_version'").fetchall()
        assert version == [(str(SCHEMA_VERSION),)]
