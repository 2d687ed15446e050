"""What an environment reports beyond the observation (StepResult.info) is stored with the node,
survives the migration of an older file, and is shown in the TUI inspector."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from engine.backends.scripted import ScriptedBackend
from engine.envs.sokoban import SokobanEnv
from engine.explorer import ExploreConfig, Explorer
from engine.store import Store
from leafe_tui.app import LeafeApp
from tests.doubles import act
from tests.test_tui import SIZE, open_run, press


def sokoban_run(path: Path) -> int:
    store = Store(path)
    backend = ScriptedBackend([act("up"), act("left"), act("down")] * 8)
    run_id = Explorer(store, backend, SokobanEnv(), ExploreConfig(budget=1, reflect_every=99)).start(
        "sokoban/fixed-1", "scripted"
    )
    store.close()
    return run_id


def test_the_environment_report_is_stored_with_each_step(tmp_path: Path) -> None:
    run_id = sokoban_run(tmp_path / "s.db")
    store = Store(tmp_path / "s.db")
    root, first, *_ = store.nodes(run_id)
    assert root.info == {}  # the reset observation has no report
    assert first.info["steps_left"] == SokobanEnv.max_steps - 1 and "boxes_on_target" in first.info
    assert store.tree(run_id)["nodes"][1]["info"] == first.info


def test_a_version_7_file_gains_the_column_and_keeps_its_nodes(tmp_path: Path) -> None:
    path = tmp_path / "v7.db"
    run_id = sokoban_run(path)
    with sqlite3.connect(path) as conn:
        conn.execute("alter table nodes drop column info")
        conn.execute("update meta set value = '7' where key = 'schema_version'")
    store = Store(path)
    nodes = store.nodes(run_id)
    assert len(nodes) > 1 and all(n.info == {} for n in nodes)
    node = store.add_node(
        run_id=run_id, branch_id=nodes[1].branch_id, step=99, observation="o", info={"a": 1}
    )
    assert node.info == {"a": 1}


def test_the_inspector_shows_the_environment_report(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    sokoban_run(path)

    async def body() -> None:
        async with LeafeApp(path).run_test(size=SIZE) as pilot:
            screen = await open_run(pilot)
            await press(pilot, "l")
            text = screen.inspector.text
            assert "Environment" in text and "steps_left" in text and "boxes_on_target" in text

    asyncio.run(body())
