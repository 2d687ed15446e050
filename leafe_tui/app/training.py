"""The training screen: jobs of the database with a live loss curve, a new job from the approved
branches, cancelling a job, and the adapter a job produced (with a way to explore with it).

Training never runs in this process: a job is a worker process (``trainer.jobs.start_background``)
that writes its progress into the job's row and its loss curve into ``train_metrics``. The screen
reads those rows on a timer (a few cheap queries a second), so it follows a job started from here,
from ``leafe train --background`` or from another terminal the same way, and keeps following it
after being closed and opened again.

This process never imports torch: building the dataset and creating the job need none, and the one
question that does (is there a CUDA GPU for QLoRA?) is asked in a short-lived child process.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static
from textual.worker import Worker, WorkerState

import trainer.jobs as jobs
from engine.errors import LeafeError
from engine.store import Store, StoreError
from leafe_tui.app import keys
from leafe_tui.app.loss_plot import LossPlot
from leafe_tui.app.training_forms import AdapterDetails, ConfirmCancel, JobRequest, NewJobForm
from leafe_tui.app.work_bar import WorkBar
from leafe_tui.app.worker import ExploreJob
from leafe_tui.stage2_render import fmt_seconds
from leafe_tui.styles import num, pct, status_style
from trainer import job_service
from trainer.train import TrainError

if TYPE_CHECKING:
    from leafe_tui.app.app import LeafeApp

REFRESH_S = 1.0
COLUMNS = ("job", "status", "phase", "base", "method", "step", "loss", "eval", "tok/s", "ETA", "error")
ENDED = ("done", "failed", "cancelled")
ERROR_CHARS = 32
NEW_JOB_ERRORS = (TrainError, StoreError, ValueError, OSError, sqlite3.Error)  # DatasetError is a ValueError


def one_line(exc: BaseException) -> str:
    """An error as a notification line: the message (its first line), never a traceback."""
    text = str(exc).strip().splitlines()
    if isinstance(exc, NEW_JOB_ERRORS) and text:
        return text[0]
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# --- what the screen shows --------------------------------------------------------------------------
def job_cells(row: dict[str, Any]) -> list[Text | str]:
    """One job as table cells (the columns of ``leafe jobs``)."""
    status = row.get("effective_status") or row["status"]
    error = (row.get("error") or "").splitlines()
    error_line = error[0] if error else ""
    if len(error_line) > ERROR_CHARS:  # the whole error is in the job's details
        error_line = error_line[: ERROR_CHARS - 1] + "…"
    return [
        Text(str(row["id"]), justify="right"),
        Text(status, style=status_style(status)),
        row.get("phase") or "",
        row["base"],
        row["method"],
        Text(f"{row.get('step') or 0}/{row.get('total_steps') or '?'}", justify="right"),
        Text(num(row.get("train_loss")), justify="right"),
        Text(num(row.get("eval_loss")), justify="right"),
        Text(num(row.get("tokens_per_s"), 0), justify="right"),
        fmt_seconds(row.get("eta_s")) if status == "running" else "",
        Text(error_line, style="red"),
    ]


@dataclass(frozen=True)
class Lineage:
    """Where a job's data came from: its dataset, and how many examples and nodes that holds."""

    dataset_id: int | None
    examples: int
    counterfactual: int
    rehearsal: int
    tasks: int
    nodes: int
    runs: tuple[int, ...]

    @classmethod
    def read(cls, store: Store, dataset_id: int | None) -> Lineage | None:
        if dataset_id is None:
            return None
        try:
            counts = store.dataset(dataset_id)["counts"]
        except StoreError:
            return None
        lines = store.dataset_examples(dataset_id)
        nodes = {
            n for line in lines for n in (line["trained_node_ids"] or []) + (line["context_node_ids"] or [])
        }
        return cls(
            dataset_id,
            counts.get("examples", len(lines)),
            counts.get("counterfactual", 0),
            counts.get("rehearsal", 0),
            counts.get("tasks", 0),
            len(nodes),
            tuple(sorted({line["run_id"] for line in lines})),
        )


def explore_command(adapter: dict[str, Any], task: str, db: Path) -> str:
    """The command line that explores ``task`` with the adapter (``--db`` when not the default one)."""
    from leafe_tui.paths import default_db

    command = f"leafe explore {task or 'TASK'} --model {adapter['base']} --adapter {adapter['id']}"
    with contextlib.suppress(OSError):
        if db.resolve() != default_db().resolve():
            command += f" --db {db}"
    return command


def adapter_text(adapter: dict[str, Any], job: dict[str, Any], lineage: Lineage | None) -> Text:
    """The adapter's files, parity and lineage (job → dataset → examples / nodes)."""
    text = Text.assemble((f"adapter {adapter['id']}", "bold green"), f"  {adapter['base']}")
    text.append(f"  rank {adapter.get('rank')}  alpha {adapter.get('alpha')}\n", style="dim")
    text.append("GGUF  ", style="dim")
    text.append(f"{adapter.get('gguf_path') or '— (not exported)'}\n")
    if adapter.get("parity") is not None:
        text.append("parity  ", style="dim")
        text.append(f"{pct(adapter['parity'])}", style="bold")
        base = pct(adapter.get("parity_base"))
        text.append(f" of next tokens agree (llama.cpp vs transformers; base model {base})")
        text.append(f" over {adapter.get('parity_positions') or '?'} positions\n", style="dim")
    else:
        text.append("parity  not checked\n", style="dim")
    text.append("lineage  ", style="dim")
    text.append(f"job {job['id']} → ")
    if lineage is None:
        text.append(f"dataset {job.get('dataset_id') or job['dataset_path']}")
    else:
        runs = ", ".join(str(r) for r in lineage.runs)
        text.append(
            f"dataset {lineage.dataset_id} → {lineage.examples} examples ({lineage.counterfactual} cf, "
            f"{lineage.rehearsal} reh) from {lineage.nodes} nodes of run(s) {runs}"
        )
    return text


def job_text(job: dict[str, Any], lineage: Lineage | None, adapter: dict[str, Any] | None, db: Path) -> Text:
    """The selected job: settings, data, note/error, files, and its adapter if it has one."""
    status = job["effective_status"]
    text = Text.assemble(
        (f"job {job['id']}  ", "bold"),
        (status, status_style(status)),
        f"  {job['method']} on {job['base']}",
    )
    if job.get("phase") and job["phase"] != status:
        text.append(f"  · {job['phase']}", style="dim")
    config = job["config"]
    settings = ", ".join(
        f"{name} {config[key]}"
        for key, name in (("epochs", "epochs"), ("lr", "lr"), ("rank", "rank"), ("max_steps", "max steps"))
        if config.get(key) is not None
    )
    text.append(f"\n{settings}", style="dim")
    if lineage is not None:
        text.append(
            f"\ndataset {lineage.dataset_id}: {lineage.examples} examples "
            f"({lineage.counterfactual} cf, {lineage.rehearsal} reh), {lineage.tasks} task(s), "
            f"{lineage.nodes} nodes"
        )
    else:
        text.append(f"\ndataset {job['dataset_path']}")
    if job.get("note"):
        text.append(f"\n{job['note']}", style="yellow")
    if job.get("error"):
        text.append(f"\n{job['error']}", style="red")
    if status == "interrupted" or status in ("failed", "cancelled"):
        text.append(f"\nresume: leafe train --resume {job['id']} --db {db}", style="dim")
    if adapter is not None:
        text.append("\n\n")
        text.append(adapter_text(adapter, job, lineage))
        text.append("\n")
        text.append(explore_command(adapter, "", db), style="cyan")
    elif job.get("out_dir"):
        text.append(f"\nfiles: {job['out_dir']}", style="dim")
    return text


class JobsTable(DataTable):
    HELP = """
## Training jobs
Every training job of the database, refreshed each second while this screen is open: the state of
its worker process, the phase, the step, train and eval loss, tokens/s and the time left.

- `n` builds a dataset from the approved branches and starts a job on it (in the background: it
  keeps running when the app closes);
- `c` cancels the selected job (a running one saves a checkpoint first: `leafe train --resume`);
- `o` (or `enter`) opens the adapter a finished job produced: its files, parity, lineage, and
  exploring a task with it.
"""


# --- the screen -------------------------------------------------------------------------------------
class TrainingScreen(Screen[None]):
    """The jobs of the app's database, the selected one's loss curve and details."""

    BINDINGS = keys.bindings(keys.TRAINING)
    DEFAULT_CSS = """
    TrainingScreen #training-title {
        height: auto;
        padding: 0 1;
        background: $boost;
    }
    TrainingScreen JobsTable {
        height: auto;
        max-height: 40%;
    }
    TrainingScreen #training-body {
        height: 1fr;
        border-top: hkey $foreground 20%;
    }
    TrainingScreen LossPlot {
        width: 1fr;
    }
    TrainingScreen #job-details {
        width: 52;
        height: 1fr;
        padding: 0 1;
        border-left: vkey $foreground 20%;
        overflow-y: auto;
    }
    """

    def __init__(self, *, refresh_s: float = REFRESH_S) -> None:
        super().__init__()
        self.refresh_s = refresh_s
        self.jobs: dict[int, dict[str, Any]] = {}
        self.adapters: dict[int, dict[str, Any]] = {}  # job id -> its (latest) adapter
        self._lineage: dict[int | None, Lineage | None] = {}  # dataset id -> lineage (datasets never change)
        self._details_key: object = None
        self._creating = False

    @property
    def leafe(self) -> LeafeApp:
        return self.app  # type: ignore[return-value]

    @property
    def store(self) -> Store:
        return self.leafe.store

    def compose(self) -> ComposeResult:
        yield Static(id="training-title")
        yield WorkBar()
        yield JobsTable(id="jobs-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="training-body"):
            yield LossPlot(id="loss-plot")
            yield Static(id="job-details")
        yield Footer(compact=True)

    @property
    def table(self) -> JobsTable:
        return self.query_one(JobsTable)

    @property
    def plot(self) -> LossPlot:
        return self.query_one(LossPlot)

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.table.add_column(column, key=column)
        self.refresh_jobs()
        self.table.focus()
        self.set_interval(self.refresh_s, self.refresh_jobs)

    def on_screen_resume(self) -> None:
        self.refresh_jobs()

    # --- reading the store ------------------------------------------------------------------------
    def refresh_jobs(self) -> None:
        """Read the jobs, the adapters and the selected job's new metrics; update what changed."""
        try:
            rows = self.store.jobs()
            adapters = self.store.adapters()
        except (StoreError, sqlite3.Error) as exc:
            self.notify(f"could not read the jobs: {exc}", severity="error", timeout=3)
            return
        self.adapters = {a["job_id"]: a for a in adapters}
        self._fill_table(rows)
        self.jobs = {row["id"]: row for row in rows}
        self._show_title()
        self._follow_selected()

    def _fill_table(self, rows: list[dict[str, Any]]) -> None:
        table = self.table
        if [str(r["id"]) for r in rows] == [k.value for k in table.rows]:
            for row in rows:  # same jobs: change only the cells that changed (no flicker, cursor kept)
                if row == self.jobs.get(row["id"]):
                    continue
                for column, cell in zip(COLUMNS, job_cells(row), strict=True):
                    table.update_cell(str(row["id"]), column, cell)
            return
        selected = self.selected_job_id()
        table.clear()
        for row in rows:
            table.add_row(*job_cells(row), key=str(row["id"]))
        if selected is not None and selected in {r["id"] for r in rows}:
            table.move_cursor(row=table.get_row_index(str(selected)), animate=False)
        elif rows and selected is None:
            table.move_cursor(row=len(rows) - 1, animate=False)  # the newest job first

    def _show_title(self) -> None:
        running = sum(1 for j in self.jobs.values() if j["effective_status"] == "running")
        title = Text.assemble(
            ("training ", "bold green"),
            (f"{len(self.jobs)} jobs, {running} running, {len(self.adapters)} adapters in ", "dim"),
            str(self.store.path),
        )
        if self._creating:
            title.append("   setting up a new job…", style="bold yellow")
        elif not self.jobs:
            new = keys.key_for("training.new", self.leafe.keymap)
            title.append(f"   no jobs yet: approve branches, then `{new}` starts one", style="yellow")
        self.query_one("#training-title", Static).update(title)

    def selected_job_id(self) -> int | None:
        table = self.table
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return int(key) if key is not None else None

    def selected_job(self) -> dict[str, Any] | None:
        job_id = self.selected_job_id()
        return self.jobs.get(job_id) if job_id is not None else None

    def lineage(self, job: dict[str, Any]) -> Lineage | None:
        dataset_id = job.get("dataset_id")
        if dataset_id not in self._lineage:
            self._lineage[dataset_id] = Lineage.read(self.store, dataset_id)
        return self._lineage[dataset_id]

    def _follow_selected(self) -> None:
        """Point the curve at the selected job, append its new metrics, redraw the details if needed."""
        job = self.selected_job()
        plot = self.plot
        job_id = job["id"] if job else None
        if plot.job_id != job_id:
            plot.reset(job_id)
        if job_id is not None:
            with contextlib.suppress(StoreError, sqlite3.Error):
                plot.extend(self.store.metrics(job_id, after_id=plot.last_id))
        adapter = self.adapters.get(job_id) if job_id is not None else None
        key = (job, adapter)
        if key == self._details_key:
            return
        self._details_key = key
        details = self.query_one("#job-details", Static)
        if job is None:
            details.update(Text("no job selected", style="dim"))
        else:
            details.update(job_text(job, self.lineage(job), adapter, self.store.path))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._follow_selected()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_adapter()

    def action_refresh(self) -> None:
        self.refresh_jobs()

    def action_back(self) -> None:
        self.app.pop_screen()

    # --- new job ----------------------------------------------------------------------------------
    def action_new_job(self) -> None:
        """The form, its base model filled in when every run used the same model (left empty, the
        base is decided from the dataset once built, as ``leafe train`` does)."""
        if self._creating:
            self.notify("a job is being set up already; wait for it", severity="warning", timeout=3)
            return
        runs = self.store.list_runs()
        models = {run["model"] for run in runs if run.get("model")}
        form = NewJobForm(models.pop() if len(models) == 1 else "", len(runs))
        self.app.push_screen(form, self.start_new_job)

    def start_new_job(self, request: JobRequest | None) -> None:
        """Build the dataset and start the job in a thread: the method check may start a Python
        that loads torch, and building reads every run; the screen keeps refreshing meanwhile."""
        if request is None:
            return
        self._creating = True
        self._show_title()
        self.notify("checking the method, then building the dataset from the approved branches…", timeout=3)
        db_path = self.store.path
        self.run_worker(
            lambda: job_service.new_job_from_approved(
                db_path, base=request.base, method=request.method, config=request.config
            ),
            thread=True,
            group="training",
            name="new training job",
            exit_on_error=False,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "training" or event.state not in (WorkerState.SUCCESS, WorkerState.ERROR):
            return
        event.stop()
        self._creating = False
        self._show_title()
        if event.state == WorkerState.ERROR:
            error = event.worker.error
            self.notify(
                one_line(error) if error else "failed", title="new training job", severity="error", timeout=8
            )
            return
        result: job_service.NewJob = event.worker.result  # type: ignore[assignment]
        self.notify(result.describe(), title="new training job", timeout=6)
        self.refresh_jobs()
        if str(result.job_id) in {k.value for k in self.table.rows}:
            self.table.move_cursor(row=self.table.get_row_index(str(result.job_id)), animate=False)
            self._follow_selected()

    async def wait_for_new_job(self) -> None:
        """Wait until the new-job thread has ended (tests); its state message may still be queued."""
        for worker in self.workers:
            if worker.group == "training":
                await worker.wait()

    # --- cancel -----------------------------------------------------------------------------------
    def action_cancel_job(self) -> None:
        job = self.selected_job()
        if job is None:
            self.notify("no job selected", timeout=2)
            return
        status = job["effective_status"]
        if status in ENDED:
            self.notify(f"job {job['id']} is {status}; nothing to cancel", timeout=3)
            return
        question = Text.assemble(
            (f"Cancel job {job['id']}?", "bold"),
            f"  ({status}, step {job.get('step') or 0}/{job.get('total_steps') or '?'})\n",
            (
                "A running job saves a checkpoint and stops after its current step; "
                f"`leafe train --resume {job['id']}` continues it.",
                "dim",
            ),
        )
        self.app.push_screen(ConfirmCancel(question), lambda yes: self.cancel_job(job["id"]) if yes else None)

    def cancel_job(self, job_id: int) -> None:
        try:
            row = jobs.cancel(self.store, job_id)
        except (StoreError, sqlite3.Error, OSError) as exc:
            self.notify(str(exc), severity="error")
            return
        if row["effective_status"] == "running":
            self.notify(f"job {job_id}: cancel requested; the worker stops after its current step", timeout=4)
        else:
            self.notify(f"job {job_id}: {row['effective_status']}", timeout=3)
        self.refresh_jobs()

    # --- adapters ---------------------------------------------------------------------------------
    def context_task(self, lineage: Lineage | None) -> tuple[str, dict[str, Any]]:
        """The task (and explore settings) to offer: the run open under this screen, else the run
        selected in the runs list, else the first run of the adapter's dataset."""
        from leafe_tui.app.run_screen import RunScreen
        from leafe_tui.app.runs import RunsScreen

        run_id: int | None = None
        for screen in reversed(self.app.screen_stack):
            if isinstance(screen, RunScreen):
                run_id = screen.run_id
            elif isinstance(screen, RunsScreen) and screen.is_mounted:
                run_id = screen.selected_run()
            if run_id is not None:
                break
        if run_id is None and lineage is not None and lineage.runs:
            run_id = lineage.runs[0]
        if run_id is None:
            return "", {}
        try:
            run = self.store.get_run(run_id)
        except StoreError:
            return "", {}
        return run["task_id"], dict(run["config"])

    def action_open_adapter(self) -> None:
        job = self.selected_job()
        if job is None:
            self.notify("no job selected", timeout=2)
            return
        adapter = self.adapters.get(job["id"])
        if adapter is None:
            self.notify(
                f"job {job['id']} has no adapter yet ({job['effective_status']}): a finished job has one",
                timeout=3,
            )
            return
        lineage = self.lineage(job)
        task, config = self.context_task(lineage)
        details = adapter_text(adapter, job, lineage)
        details.append("\n\nexplore with it:\n", style="dim")
        details.append(explore_command(adapter, task, self.store.path), style="bold cyan")
        gguf = adapter.get("gguf_path")
        can_explore = bool(gguf) and Path(gguf).is_file()
        if not can_explore:
            details.append(f"\n\nits GGUF file is missing: {gguf or '(not exported)'}", style="yellow")
        self.app.push_screen(
            AdapterDetails(details, task, can_explore),
            lambda chosen: self.explore_with(adapter, chosen, config) if chosen else None,
        )

    def explore_with(self, adapter: dict[str, Any], task: str, config: dict[str, Any]) -> bool:
        """Start exploring ``task`` with the adapter (as ``leafe explore --adapter``), then go to the
        runs list, where the new run opens as soon as it exists."""
        from engine.runtime import model_spec_for
        from leafe_tui.app.runs import RunsScreen

        try:
            spec = model_spec_for(
                adapter["base"],
                adapter=str(adapter["id"]),
                db=self.store.path,
                n_ctx=self.leafe.n_ctx,
                cache=self.leafe.cache,
            )
        except (LeafeError, OSError) as exc:
            self.notify(str(exc), severity="error")
            return False
        model = spec.model
        job = ExploreJob("start", tasks=(task,), model_spec=spec, config=config)
        if not self.leafe.start_job(job, follow=True):
            return False
        self.notify(f"exploring {task} on {model} with adapter {adapter['id']}", timeout=4)
        while len(self.app.screen_stack) > 1 and not isinstance(self.app.screen, RunsScreen):
            self.app.pop_screen()
        return True
