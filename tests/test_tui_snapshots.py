"""SVG snapshots of the app's main screens (pytest-textual-snapshot) over a deterministic database.

The database comes from the scripted explorer of tests/test_tui.py; the one timestamp on these
screens (a run's creation time) is fixed and the database path is relative, so the pictures only
change when the screens do. Update the baselines with ``pytest tests/test_tui_snapshots.py
--snapshot-update`` and look at them (the report is written on failure).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytest_textual_snapshot")

from textual.pilot import Pilot  # noqa: E402
from textual.widgets import TextArea  # noqa: E402

from engine.store import Store  # noqa: E402
from leafe_tui.app.model import branch_key, node_key  # noqa: E402
from tests.test_tui import SIZE, build_db, make_app  # noqa: E402

FIXED_TIME = "2026-01-01T09:00:00.000+00:00"


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    build_db(Path("leafe.db"))
    store = Store("leafe.db")
    store.db.execute("update runs set created_at = ?, updated_at = ?", [FIXED_TIME, FIXED_TIME])
    store.db.conn.commit()
    store.close()
    return make_app(Path("leafe.db"))


async def open_run(pilot: Pilot) -> None:
    await pilot.press("enter")
    await pilot.pause()


def test_runs_list(snap_compare, app) -> None:
    assert snap_compare(app, terminal_size=SIZE)


def test_run_tree_and_inspector(snap_compare, app) -> None:
    async def run_before(pilot: Pilot) -> None:
        await open_run(pilot)
        pilot.app.screen.run_tree.go(node_key(8))  # step 2 of branch #3: a rollback point
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_summary_editor(snap_compare, app) -> None:
    async def run_before(pilot: Pilot) -> None:
        await open_run(pilot)
        pilot.app.screen.run_tree.go(branch_key(3))
        await pilot.press("e")
        await pilot.pause()
        pilot.app.screen.query_one(TextArea).cursor_blink = False
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_compare_siblings(snap_compare, app) -> None:
    async def run_before(pilot: Pilot) -> None:
        await open_run(pilot)
        pilot.app.screen.run_tree.go(branch_key(2))
        await pilot.press("c")
        await pilot.pause()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
