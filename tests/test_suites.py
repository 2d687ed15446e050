"""Built-in suites: fixed, disjoint train / held-out splits of real tasks, usable from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.envs import env_for_task
from engine.errors import SettingError
from engine.suites import SUITES, hashed_split, suite_tasks
from leafe_tui.cli import app
from tests.doubles import act


@pytest.mark.parametrize("name", sorted(SUITES))
def test_splits_are_disjoint_cover_the_suite_and_are_real_tasks(name: str) -> None:
    train, held_out = suite_tasks(f"{name}:train"), suite_tasks(f"{name}:held-out")
    assert train and held_out and not set(train) & set(held_out)
    every_split = [task for split in SUITES[name].splits for task in suite_tasks(f"{name}:{split}")]
    assert sorted(every_split) == sorted(suite_tasks(name))  # each task in exactly one split
    for task in (train[0], held_out[-1]):
        env_for_task(task)  # raises for a task that does not exist


def test_the_split_of_a_task_depends_on_its_id_alone() -> None:
    """Adding tasks to a suite never moves an old one to the other side."""
    ids = [f"code/humaneval/{i}" for i in range(164)]
    assert [hashed_split(i) for i in ids] == [hashed_split(i) for i in reversed(ids)][::-1]
    share = sum(hashed_split(i) == "held-out" for i in ids) / len(ids)
    assert 0.15 < share < 0.35  # about a quarter held out


def test_unknown_suites_and_splits_are_one_line_errors() -> None:
    with pytest.raises(SettingError, match="unknown suite 'mbpp'"):
        suite_tasks("mbpp:train")
    with pytest.raises(SettingError, match="train, held-out"):
        suite_tasks("humaneval:test")
    result = CliRunner().invoke(
        app, ["eval", "--suite", "humaneval:dev", "--backend", "scripted", "--model", "x"]
    )
    assert result.exit_code == 2 and "held-out" in result.output


def test_eval_runs_a_suite_split(tmp_path: Path) -> None:
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps([act("up")] * 200))
    held_out = suite_tasks("sokoban:held-out")
    result = CliRunner().invoke(
        app,
        ["eval", "--suite", "sokoban:held-out", "--backend", "scripted", "--model", str(replies), "-n", "1",
         "--k", "1", "--max-steps", "1", "--db", str(tmp_path / "e.db"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout[result.stdout.index("{") :])["tasks"]
    assert {r["task_id"] for r in rows} == set(held_out) and len(rows) == len(held_out)
