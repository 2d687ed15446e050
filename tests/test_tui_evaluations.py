"""The app's evaluations view: the list, one evaluation's tasks and samples, a sample's trajectory.

The evaluation is a real stored one (``run_evaluation`` with the scripted backend on the test
environment); the app is the real app driven by Textual's pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from engine.backends.scripted import ScriptedBackend
from engine.evaluation import create_evaluation, run_evaluation
from engine.rollout import RolloutConfig
from engine.specs import EnvSpec, ModelSpec
from engine.store import Store
from leafe_tui.app import LeafeApp
from leafe_tui.app.evaluations import (
    EvaluationScreen,
    EvaluationsScreen,
    SampleScreen,
    SamplesTable,
    TasksTable,
)
from leafe_tui.app.runs import RunsScreen
from tests.doubles import PathTestEnv, act
from tests.test_tui import SIZE, until

TASKS = ["path/abc", "path/abcdefg"]


def evaluated_db(path: Path) -> Path:
    """Two tasks × 3 samples: path/abc solved by samples 0 and 2, path/abcdefg never."""
    replies = iter(
        [act("a"), act("b"), act("c")] + [act("q")] + [act("a"), act("b"), act("c")]  # path/abc
        + [act("z")] * 3  # path/abcdefg
    )  # fmt: skip
    store = Store(path)
    config = RolloutConfig(grammar=False)
    eval_id = create_evaluation(
        store, ModelSpec(model="scripted", backend="scripted"), TASKS, 3, [1, 3], config,
        {t: EnvSpec("path") for t in TASKS}, label="before training",
    )  # fmt: skip
    backend = ScriptedBackend(reply_fn=lambda messages: next(replies))
    run_evaluation(store, eval_id, backend, {t: PathTestEnv() for t in TASKS}, config)
    store.close()
    return path


def test_evaluations_list_tasks_samples_and_a_trajectory(tmp_path: Path) -> None:
    db = evaluated_db(tmp_path / "e.db")

    async def body() -> None:
        async with LeafeApp(db).run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen), "runs list")
            await pilot.press("v")
            await until(pilot, lambda: isinstance(pilot.app.screen, EvaluationsScreen), "evaluations")
            table = pilot.app.screen.query_one("#evals-table")
            assert table.row_count == 1
            row = [str(cell) for cell in table.get_row_at(0)]
            assert "before training" in row and "@1 33.3%  @3 50.0%" in row  # (2/3 + 0) / 2 at k = 1

            await pilot.press("enter")
            await until(pilot, lambda: isinstance(pilot.app.screen, EvaluationScreen), "one evaluation")
            screen: EvaluationScreen = pilot.app.screen  # type: ignore[assignment]
            tasks = screen.query_one(TasksTable)
            assert [tasks.get_row_at(i)[0] for i in range(tasks.row_count)] == TASKS
            samples = screen.query_one(SamplesTable)
            await until(pilot, lambda: samples.row_count == 3, "the first task's samples")
            results = [samples.get_row_at(i)[1].plain for i in range(3)]
            assert results == ["✓ success", "✗ failure", "✓ success"]

            await pilot.press("down")  # the second task: its samples replace the first's
            await until(pilot, lambda: screen.shown_task == "path/abcdefg", "the second task's samples")
            assert [samples.get_row_at(i)[1].plain for i in range(samples.row_count)] == ["✗ failure"] * 3
            await pilot.press("up", "enter")  # enter on a task moves to its samples
            await until(pilot, lambda: samples.has_focus, "the samples table")
            await pilot.press("down", "enter")  # sample 1: the failure
            await until(pilot, lambda: isinstance(pilot.app.screen, SampleScreen), "the trajectory")
            sample_screen: SampleScreen = pilot.app.screen  # type: ignore[assignment]
            assert (sample_screen.task_id, sample_screen.index) == ("path/abc", 1)
            text = sample_screen.text.plain
            assert "step 1" in text and "<action>q</action>" in text and "Wrong letter 'q'" in text

            for expected in (EvaluationScreen, EvaluationsScreen, RunsScreen):
                await pilot.press("escape")
                await until(pilot, lambda e=expected: isinstance(pilot.app.screen, e), expected.__name__)

    asyncio.run(body())


def test_an_empty_database_says_how_to_make_an_evaluation(tmp_path: Path) -> None:
    Store(tmp_path / "empty.db").close()

    async def body() -> None:
        async with LeafeApp(tmp_path / "empty.db").run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen), "runs list")
            pilot.app.action_open_evaluations()
            await until(pilot, lambda: "none yet" in getattr(pilot.app.screen, "title_text", ""), "the title")
            title = pilot.app.screen.title_text.plain
            assert "none yet" in title and "leafe eval" in title

    asyncio.run(body())


def test_an_unfinished_evaluation_opens_with_its_missing_pass_at_k_marked(tmp_path: Path) -> None:
    store = Store(tmp_path / "p.db")
    config = RolloutConfig(grammar=False)
    eval_id = create_evaluation(
        store, ModelSpec(model="scripted", backend="scripted"), TASKS, 3, [1, 3], config,
        {t: EnvSpec("path") for t in TASKS},
    )  # fmt: skip
    replies = iter([act("a"), act("b"), act("c")])
    backend = ScriptedBackend(reply_fn=lambda messages: next(replies))
    with pytest.raises(StopIteration):  # stopped after one sample: the scripted replies run out
        run_evaluation(store, eval_id, backend, {t: PathTestEnv() for t in TASKS}, config)
    store.close()
    assert len(Store(tmp_path / "p.db").eval_samples(eval_id)) == 1

    async def body() -> None:
        async with LeafeApp(tmp_path / "p.db").run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen), "runs list")
            await pilot.press("v", "enter")
            await until(pilot, lambda: isinstance(pilot.app.screen, EvaluationScreen), "one evaluation")
            tasks = pilot.app.screen.query_one(TasksTable)
            await until(pilot, lambda: tasks.row_count == 1, "the evaluated task")
            row = tasks.get_row_at(0)
            assert (row[0], row[3].plain, row[4].plain) == ("path/abc", "100.0%", "–")  # pass@3 needs 3

    asyncio.run(body())
