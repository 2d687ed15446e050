"""The training screen of the Textual app, driven with Pilot over real databases (no model, no torch).

Jobs, metrics and adapters are written through the Store API from a second connection, the way a
trainer worker process writes them, and the screen must pick them up on its own timer. Building a
dataset is real (scripted explorer, test environment); only two things are doubled: the worker
process (``start_background``) and the GPU question (which would start a Python that loads torch).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from textual.command import CommandList
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import Input

import trainer.dataset
import trainer.job_service
import trainer.jobs
from engine.backends.scripted import ScriptedBackend
from engine.specs import ModelSpec
from engine.store import Store
from leafe_tui.app import LeafeApp
from leafe_tui.app.loss_plot import LossPlot, plot_lines
from leafe_tui.app.run_screen import RunScreen
from leafe_tui.app.runs import RunsScreen
from leafe_tui.app.training import TrainingScreen
from leafe_tui.app.training_forms import AdapterDetails, ConfirmCancel, NewJobForm
from leafe_tui.app.worker import WorkFinished
from tests.doubles import PathTestEnv, explore_recovery, help_for, policy, rollback_branch, write_adapter
from trainer.job_service import choose_method_isolated
from trainer.train import TrainConfig, TrainError

SIZE = (120, 40)
CONFIG = asdict(TrainConfig())


# --- helpers --------------------------------------------------------------------------------------
def make_app(db: Path, adapters: list[str | None] | None = None) -> LeafeApp:
    """The app with the scripted model; ``adapters`` records the adapter each model load asked for."""

    def backend(spec: ModelSpec) -> ScriptedBackend:
        if adapters is not None:
            adapters.append(spec.adapter)
        return ScriptedBackend(reply_fn=policy())

    return LeafeApp(db, backend_factory=backend, env_factory=lambda task: PathTestEnv())


def add_job(store: Store, status: str = "queued", **values: Any) -> int:
    job_id = store.create_job(
        dataset_id=None, dataset_path="data.jsonl", base="scripted", method="lora", config=CONFIG
    )
    if status != "queued" or values:
        store.update_job(job_id, status=status, **values)
    return job_id


def notes(messages: list[Message]) -> list[Any]:
    return list({id(m): m.notification for m in messages if isinstance(m, Notify)}.values())


async def until(pilot: Pilot, condition: Callable[[], object], what: str, seconds: float = 8.0) -> None:
    """Let the app run until ``condition`` holds (the screen refreshes on a 1 s timer)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def open_training(pilot: Pilot) -> TrainingScreen:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the runs list")
    await pilot.press("t")
    await until(pilot, lambda: isinstance(app.screen, TrainingScreen), "the training screen")
    await pilot.pause()
    return app.screen  # type: ignore[return-value]


def run(body) -> None:
    asyncio.run(body)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "leafe.db"


@pytest.fixture
def approved_run(db: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    """A finished run whose rollback branch recovers and is approved (the dataset has 1 cf + 1 reh)."""
    monkeypatch.setattr(trainer.dataset, "env_action_help", help_for)  # the test environment's help
    store = Store(db)
    run_id, _ = explore_recovery(store, model="scripted")
    store.set_review(rollback_branch(store, run_id).id, "approved")
    store.close()
    return run_id


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Test double for the worker process and the GPU probe: records the jobs it was asked to start."""
    calls: list[int] = []

    def start_background_double(store: Store, job_id: int) -> int:
        calls.append(job_id)
        return 4242

    def choose_method_double(requested: str) -> str:
        return "lora"

    monkeypatch.setattr(trainer.jobs, "start_background", start_background_double)
    monkeypatch.setattr(trainer.job_service, "choose_method_isolated", choose_method_double)
    return calls


# --- listing and following jobs -------------------------------------------------------------------
def test_jobs_are_listed_and_the_curve_grows_while_another_process_trains(db: Path) -> None:
    store = Store(db)
    running = add_job(store, "running", pid=os.getpid(), phase="training", step=2, total_steps=10)
    for step, loss in ((1, 2.5), (2, 2.1)):
        store.add_metric(running, "train", step, loss)
    done = add_job(store, "done", phase="done", step=10, total_steps=10, train_loss=0.7)
    writer = Store(db)  # the "worker process": its own connection

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            screen = await open_training(pilot)
            table, plot = screen.table, screen.plot
            assert [k.value for k in table.rows] == [str(running), str(done)]
            assert str(table.get_cell(str(running), "status")) == "running"
            assert str(table.get_cell(str(done), "status")) == "done"
            assert screen.selected_job_id() == done  # the newest job first
            await pilot.press("up")
            await until(pilot, lambda: plot.job_id == running and len(plot.train) == 2, "the curve")
            # the worker goes on: three more steps and an evaluation, while the screen is open
            for step, loss in ((3, 1.8), (4, 1.5), (5, 1.2)):
                writer.add_metric(running, "train", step, loss)
            writer.add_metric(running, "eval", 5, 1.4)
            writer.update_job(running, step=5, train_loss=1.2, eval_loss=1.4, eta_s=75.0)
            await until(pilot, lambda: len(plot.train) == 5 and plot.evals == [(5, 1.4)], "new points")
            assert plot.train[-1] == (5, 1.2)
            assert str(table.get_cell(str(running), "step")) == "5/10"
            assert str(table.get_cell(str(running), "ETA")) == "1m15s"
            rendered = "\n".join(line.plain for line in plot_lines(plot.train, plot.evals, 60, 12))
            assert "2.500" in rendered and "1.200" in rendered and "◆" in rendered
            details = str(screen.query_one("#job-details").render())
            assert f"job {running}" in details and "epochs 2" in details

    run(body())
    writer.close()
    store.close()


def test_a_resumed_job_replaces_the_tail_of_its_curve() -> None:
    plot = LossPlot()
    plot.job_id = 1
    rows = [(1, "train", 1, 3.0), (2, "train", 2, 2.0), (3, "train", 3, 1.0)]
    plot.extend([{"id": i, "kind": k, "step": s, "loss": v} for i, k, s, v in rows])
    # resumed from the checkpoint at step 2: step 3 comes again with another loss
    plot.extend([{"id": 9, "kind": "train", "step": 3, "loss": 1.5}])
    assert plot.train == [(1, 3.0), (2, 2.0), (3, 1.5)] and plot.last_id == 9
    assert "no loss yet" in plot_lines([], [], 40, 10)[0].plain


# --- cancel ---------------------------------------------------------------------------------------
def test_cancel_asks_first_then_cancels_a_queued_job(db: Path) -> None:
    store = Store(db)
    queued = add_job(store)
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await open_training(pilot)
            await pilot.press("c")
            await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmCancel), "the question")
            await pilot.press("n")  # keep it
            await until(pilot, lambda: pilot.app.screen is screen, "back on the screen")
            assert store.job(queued)["status"] == "queued"
            await pilot.press("c")
            await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmCancel), "the question")
            await pilot.press("y")
            await until(pilot, lambda: store.job(queued)["status"] == "cancelled", "the cancel")
            assert store.job(queued)["cancel_requested"] == 1
            await until(
                pilot, lambda: str(screen.table.get_cell(str(queued), "status")) == "cancelled", "row"
            )
            assert any(f"job {queued}: cancelled" in n.message for n in notes(messages))
            await pilot.press("c")  # an ended job: nothing to ask
            await pilot.pause()
            assert pilot.app.screen is screen
            assert any("nothing to cancel" in n.message for n in notes(messages))

    run(body())
    store.close()


def test_cancelling_a_running_job_signals_its_worker(db: Path) -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    store = Store(db)
    job = add_job(store, "running", pid=worker.pid, step=3, total_steps=10)
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            await open_training(pilot)
            await pilot.press("c")
            await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmCancel), "the question")
            await pilot.press("y")
            await until(pilot, lambda: store.job(job)["cancel_requested"] == 1, "the flag")
            assert any("cancel requested" in n.message for n in notes(messages))

    try:
        run(body())
        assert worker.wait(timeout=10) != 0  # SIGTERM reached the worker
    finally:
        worker.kill()
        store.close()


# --- new job from the approved branches -----------------------------------------------------------
def test_new_job_with_nothing_approved_is_a_one_line_error(
    db: Path, monkeypatch: pytest.MonkeyPatch, started: list[int]
) -> None:
    monkeypatch.setattr(trainer.dataset, "env_action_help", help_for)
    store = Store(db)
    explore_recovery(store, model="scripted")  # nothing approved
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await open_training(pilot)
            await pilot.press("n")
            await until(pilot, lambda: isinstance(pilot.app.screen, NewJobForm), "the form")
            await pilot.press("ctrl+s")
            await until(pilot, lambda: any(n.severity == "error" for n in notes(messages)), "the error")
            await until(pilot, lambda: not screen._creating, "the worker's end")

    run(body())
    (error,) = [n for n in notes(messages) if n.severity == "error"]
    assert "no examples" in error.message and "not approved" in error.message and "\n" not in error.message
    assert store.jobs() == [] and store.datasets() == [] and started == []
    store.close()


def test_new_job_builds_a_dataset_and_starts_a_queued_job(
    db: Path, approved_run: int, started: list[int]
) -> None:
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await open_training(pilot)
            await pilot.press("n")
            await until(pilot, lambda: isinstance(pilot.app.screen, NewJobForm), "the form")
            form = pilot.app.screen
            assert form.query_one("#job-base", Input).value == "scripted"  # the runs' model
            form.query_one("#job-epochs", Input).value = "1"
            form.query_one("#job-max-steps", Input).value = "3"
            await pilot.press("ctrl+s")
            await until(pilot, lambda: started != [], "the job's start")
            await until(pilot, lambda: screen.table.row_count == 1, "the job in the table")
            assert screen.selected_job_id() == started[0]

    run(body())
    store = Store(db)
    (job,) = store.jobs()
    assert started == [job["id"]]
    assert job["status"] == "queued" and job["method"] == "lora" and job["base"] == "scripted"
    assert job["config"]["epochs"] == 1 and job["config"]["max_steps"] == 3
    (dataset,) = store.datasets()
    assert job["dataset_id"] == dataset["id"] and dataset["settings"]["selection"] == "approved"
    assert Path(dataset["path"]) == db.parent / "leafe.datasets" / "dataset-1.jsonl"
    assert Path(job["dataset_path"]).is_file()
    assert (dataset["counts"]["counterfactual"], dataset["counts"]["rehearsal"]) == (1, 1)
    assert any(f"job {job['id']} started in the background" in n.message for n in notes(messages))
    store.close()


def test_bad_settings_in_the_form_are_one_line_and_keep_it_open(
    db: Path, approved_run: int, started: list[int]
) -> None:
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            await open_training(pilot)
            await pilot.press("n")
            await until(pilot, lambda: isinstance(pilot.app.screen, NewJobForm), "the form")
            pilot.app.screen.query_one("#job-epochs", Input).value = "two"
            await pilot.press("ctrl+s")
            await pilot.pause()
            pilot.app.screen.query_one("#job-epochs", Input).value = "0"
            await pilot.press("ctrl+s")
            await pilot.pause()
            assert isinstance(pilot.app.screen, NewJobForm)

    run(body())
    errors = [n.message for n in notes(messages) if n.severity == "error"]
    assert errors == ["epochs must be a whole number, not 'two'", "the number of epochs must be at least 1"]
    assert started == []


def test_the_gpu_question_is_asked_in_a_child_process() -> None:
    """``lora`` needs no answer; ``qlora`` is answered by a child that may load torch (this one never)."""
    assert choose_method_isolated("lora") == "lora"
    with pytest.raises(TrainError, match="method must be one of"):
        choose_method_isolated("dora")
    try:
        method = choose_method_isolated("qlora")
    except TrainError as exc:  # no CUDA GPU (or no bitsandbytes) here: one line, as `leafe train` says
        assert "QLoRA needs" in str(exc) and "\n" not in str(exc)
    else:
        assert method == "qlora"


def test_opening_the_training_screen_does_not_import_torch(db: Path) -> None:
    store = Store(db)
    job = add_job(store, "done", step=2, total_steps=2)
    store.add_metric(job, "train", 1, 2.0)
    store.close()
    code = f"""
import asyncio, sys
from leafe_tui.app import LeafeApp
from leafe_tui.app.training import TrainingScreen

async def main():
    app = LeafeApp({str(db)!r})
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("t")
        await pilot.pause()
        assert isinstance(app.screen, TrainingScreen) and app.screen.plot.train, "screen not open"

asyncio.run(main())
print(",".join(sorted(m for m in sys.modules if m.split(".")[0] in {{"torch", "transformers", "peft"}})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


# --- adapters -------------------------------------------------------------------------------------
def test_adapter_details_and_exploring_with_it(db: Path, approved_run: int, tmp_path: Path) -> None:
    gguf = write_adapter(tmp_path / "adapter.gguf")
    store = Store(db)
    from trainer.dataset import DatasetSettings, build_dataset

    dataset_id, _ = build_dataset(store, DatasetSettings(), tmp_path / "d.jsonl", action_help=help_for)
    job = store.create_job(
        dataset_id=dataset_id,
        dataset_path=str(tmp_path / "d.jsonl"),
        base="scripted",
        method="lora",
        config=CONFIG,
    )
    store.update_job(job, status="done", phase="done", step=4, total_steps=4)
    adapter = store.add_adapter(
        job_id=job,
        dataset_id=dataset_id,
        base="scripted",
        peft_dir=str(tmp_path / "peft"),
        gguf_path=str(gguf),
        rank=16,
        alpha=32.0,
        parity=0.985,
        parity_base=0.99,
        parity_positions=200,
    )
    adapters: list[str | None] = []
    messages: list[Message] = []
    app = make_app(db, adapters)

    async def body() -> None:
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await open_training(pilot)
            await pilot.press("o")
            await until(pilot, lambda: isinstance(app.screen, AdapterDetails), "the adapter")
            details = app.screen.details.plain
            assert str(gguf) in details and "98.5%" in details and "99.0%" in details
            assert f"job {job} → dataset {dataset_id} → 2 examples" in details
            assert f"leafe explore path/abc --model scripted --adapter {adapter} --db {db}" in details
            assert app.screen.query_one("#adapter-task", Input).value == "path/abc"  # the selected run's
            await pilot.press("ctrl+r")
            await until(
                pilot, lambda: isinstance(app.screen, RunsScreen) or app.run_screens(), "back to runs"
            )
            await app.wait_for_work()
            await until(pilot, lambda: any(isinstance(m, WorkFinished) for m in messages), "the exploration")

    run(body())
    assert adapters == [str(gguf.resolve())]
    newest = store.list_runs()[-1]
    assert newest["id"] != approved_run and newest["config"]["adapter"] == str(gguf.resolve())
    assert newest["task_id"] == "path/abc"
    store.close()


def test_a_job_without_an_adapter_says_so(db: Path) -> None:
    store = Store(db)
    add_job(store, "failed", error="TrainError: every example is longer than --max-seq-len 8")
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await open_training(pilot)
            assert str(screen.table.get_cell("1", "error")).startswith("TrainError: every example")
            details = str(screen.query_one("#job-details").render())
            assert "longer than --max-seq-len 8" in details
            await pilot.press("o")
            await pilot.pause()
            assert pilot.app.screen is screen
            pilot.app.action_open_training()  # already open (the palette has it everywhere): no second one
            await pilot.pause()
            assert pilot.app.screen is screen
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen), "the runs list")

    run(body())
    assert any("has no adapter yet (failed)" in n.message for n in notes(messages))
    store.close()


def test_the_palette_opens_training_from_a_run(db: Path) -> None:
    store = Store(db)
    explore_recovery(store, model="scripted")
    store.close()

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            app = pilot.app
            await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the runs list")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run")
            await pilot.press("ctrl+p", *"training")
            hits = app.screen.query_one(CommandList)
            await until(pilot, lambda: hits.option_count > 0, "palette hits")
            await pilot.press("enter")
            await until(pilot, lambda: isinstance(app.screen, TrainingScreen), "the training screen")
            await pilot.press("q")
            await until(pilot, lambda: isinstance(app.screen, RunScreen), "back on the run")

    run(body())


# --- snapshot -------------------------------------------------------------------------------------
def test_training_screen_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """The screen with a finished job selected: its curve, details, adapter and lineage (relative
    paths and no running job, so the picture is the same on every machine)."""
    pytest.importorskip("pytest_textual_snapshot")
    snap_compare = request.getfixturevalue("snap_compare")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LEAFE_DB", "elsewhere.db")
    from trainer.dataset import DatasetSettings, build_dataset

    store = Store("leafe.db")
    run_id, _ = explore_recovery(store, model="scripted")
    store.set_review(rollback_branch(store, run_id).id, "approved")
    dataset_id, _ = build_dataset(store, DatasetSettings(), Path("d.jsonl"), action_help=help_for)
    add_job(store, "failed", phase="failed", error="TrainError: every example is longer than --max-seq-len 8")
    add_job(store)
    done = store.create_job(
        dataset_id=dataset_id, dataset_path="d.jsonl", base="scripted", method="lora", config=CONFIG
    )
    store.update_job(
        done, status="done", phase="done", step=24, total_steps=24, train_loss=0.61, eval_loss=0.74
    )
    for step in range(1, 25):
        store.add_metric(done, "train", step, 0.6 + 2.0 / step)
        if step % 8 == 0:
            store.add_metric(done, "eval", step, 0.7 + 2.0 / step)
    store.add_adapter(
        job_id=done,
        dataset_id=dataset_id,
        base="scripted",
        peft_dir="leafe.jobs/job-3/adapter",
        gguf_path="leafe.jobs/job-3/adapter.gguf",
        rank=16,
        alpha=32.0,
        parity=0.985,
        parity_base=0.99,
        parity_positions=200,
    )
    store.close()

    async def run_before(pilot: Pilot) -> None:
        await pilot.press("t")
        await pilot.pause()

    assert snap_compare(make_app(Path("leafe.db")), terminal_size=SIZE, run_before=run_before)
