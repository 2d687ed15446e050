"""The stored evaluations: a list, one evaluation's per-task table and samples, one sample's trajectory.

`v` on the runs list opens the list; `enter` opens an evaluation (its tasks on top, the selected
task's samples below, the mean Pass@k curve in the title); `enter` on a sample shows what the model
replied and what the environment answered at every step, so a failing sample can be read like a run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine.eval_records import EvalSample
from engine.evaluation import Summary, summarise
from engine.specs import ModelSpec
from leafe_tui.app import keys
from leafe_tui.styles import status_style

if TYPE_CHECKING:
    from leafe_tui.app.app import LeafeApp


def _model(record: dict[str, Any]) -> str:
    spec = ModelSpec.from_json(record["model_spec"]) or ModelSpec()
    adapter = f" + adapter {spec.adapter_id}" if spec.adapter_id is not None else ""
    if spec.adapter and not adapter:
        adapter = " + adapter"
    return spec.model + adapter


def _curve(summary: Summary, n: int) -> str:
    return "  ".join(f"@{k} {100 * summary.mean_pass_at(k):.0f}%" for k in range(1, n + 1))


def _right(value: object) -> Text:
    return Text(str(value), justify="right")


def _percent(value: float) -> Text:
    return Text(f"{100 * value:.1f}%", justify="right", style="bold green" if value >= 0.5 else "")


class _Screen(Screen[None]):
    @property
    def leafe(self) -> LeafeApp:
        return self.app  # type: ignore[return-value]

    def action_back(self) -> None:
        self.app.pop_screen()

    def selected_key(self, table: DataTable) -> str | None:
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        return table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value


class EvaluationsTable(DataTable):
    HELP = """
## Evaluations
Every stored evaluation (`leafe eval`) with its mean Pass@k. `enter` opens one: its tasks, their
samples, and each sample's trajectory. `leafe compare A B` says whether one is really better.
"""


class EvaluationsScreen(_Screen):
    """The evaluations of the app's database."""

    BINDINGS = keys.bindings(keys.EVALS)
    title_text = Text()
    DEFAULT_CSS = """
    EvaluationsScreen #evals-title { height: auto; padding: 0 1; background: $boost; }
    """

    def compose(self) -> ComposeResult:
        yield Static(id="evals-title")
        yield EvaluationsTable(id="evals-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(EvaluationsTable)
        for column in ("eval", "label", "model", "status", "tasks", "n", "mean pass@k", "created"):
            table.add_column(column, key=column)
        self.action_refresh()
        table.focus()

    def action_refresh(self) -> None:
        table = self.query_one(EvaluationsTable)
        table.clear()
        records = self.leafe.store.evaluations()
        for record in records:
            summary = summarise(self.leafe.store, record["id"])
            status = record["status"] if summary.complete else f"{record['status']} (incomplete)"
            means = "  ".join(f"@{k} {100 * summary.mean_pass_at(k):.1f}%" for k in record["ks"])
            table.add_row(
                Text(str(record["id"]), justify="right"), record.get("label") or "", _model(record),
                Text(status, style=status_style(record["status"])), _right(len(record["tasks"])),
                _right(record["n"]), means, record["created_at"][:16].replace("T", " "),
                key=str(record["id"]),
            )  # fmt: skip
        title = Text.assemble(
            ("evaluations ", "bold green"), (f"{len(records)} in ", "dim"), str(self.leafe.store.path)
        )
        if not records:
            title.append("   none yet: `leafe eval TASK -n 8` makes one", style="yellow")
        self.title_text = title
        self.query_one("#evals-title", Static).update(title)

    def action_open(self) -> None:
        key = self.selected_key(self.query_one(EvaluationsTable))
        if key is not None:
            self.app.push_screen(EvaluationScreen(int(key)))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.app.push_screen(EvaluationScreen(int(event.row_key.value)))


class TasksTable(DataTable):
    HELP = """
## Tasks of the evaluation
Per task: samples, successes and Pass@k (unbiased estimator). The samples of the selected task are
listed below; `tab` moves there, `enter` on a sample opens its trajectory.
"""


class SamplesTable(DataTable):
    HELP = """
## Samples
One rollout each: success, steps, generated tokens, seconds. `enter` opens its trajectory.
"""


class EvaluationScreen(_Screen):
    """One evaluation: per-task results on top, the selected task's samples below."""

    BINDINGS = keys.bindings(keys.EVAL)
    DEFAULT_CSS = """
    EvaluationScreen #eval-title { height: auto; padding: 0 1; background: $boost; }
    EvaluationScreen TasksTable { height: 1fr; }
    EvaluationScreen SamplesTable { height: 1fr; border-top: hkey $foreground 20%; }
    """

    def __init__(self, eval_id: int) -> None:
        super().__init__()
        self.eval_id = eval_id
        self.shown_task: str | None = None
        self.samples: dict[str, list[EvalSample]] = {}  # by task, read once (without trajectories)

    def compose(self) -> ComposeResult:
        yield Static(id="eval-title")
        yield TasksTable(id="eval-tasks", cursor_type="row", zebra_stripes=True)
        yield SamplesTable(id="eval-samples", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        store = self.leafe.store
        record = store.evaluation(self.eval_id)
        summary = summarise(store, self.eval_id)
        for sample in store.eval_samples(self.eval_id, trajectories=False):
            self.samples.setdefault(sample.task_id, []).append(sample)
        tasks = self.query_one(TasksTable)
        for column in ("task", "n", "solved", *[f"pass@{k}" for k in record["ks"]]):
            tasks.add_column(column, key=column)
        for result in summary.tasks:
            tasks.add_row(
                result.task_id,
                Text(str(result.n), justify="right"),
                Text(str(result.successes), justify="right", style="green" if result.successes else "red"),
                *[_percent(result.pass_at(k)) if k <= result.n else _right("–") for k in record["ks"]],
                key=result.task_id,
            )
        samples = self.query_one(SamplesTable)
        for column in ("sample", "result", "steps", "generated", "seconds"):
            samples.add_column(column, key=column)
        title = Text.assemble(
            (f"evaluation {self.eval_id} ", "bold green"), (_model(record), "bold"),
            (f"  n = {record['n']}  ", "dim"), ("mean pass@k  ", "dim"), _curve(summary, record["n"]),
        )  # fmt: skip
        if not summary.complete:
            title.append(f"   incomplete: `leafe eval --resume {self.eval_id}`", style="yellow")
        self.query_one("#eval-title", Static).update(title)
        tasks.focus()
        if summary.tasks:
            self.show_samples(summary.tasks[0].task_id)

    def show_samples(self, task_id: str) -> None:
        if task_id == self.shown_task:
            return
        self.shown_task = task_id
        table = self.query_one(SamplesTable)
        table.clear()
        for sample in self.samples.get(task_id, []):
            result = (
                Text("✓ success", style="bold green") if sample.success else Text("✗ failure", style="red")
            )
            table.add_row(
                _right(sample.sample), result, _right(sample.steps), _right(sample.generated_tokens),
                _right(f"{sample.seconds:.1f}"),
                key=str(sample.sample),
            )  # fmt: skip

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if isinstance(event.data_table, TasksTable) and event.row_key.value is not None:
            self.show_samples(event.row_key.value)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if isinstance(event.data_table, TasksTable):
            self.query_one(SamplesTable).focus()
        elif event.row_key.value is not None and self.shown_task is not None:
            self.open_sample(self.shown_task, int(event.row_key.value))

    def action_open(self) -> None:
        key = self.selected_key(self.query_one(SamplesTable))
        if key is not None and self.shown_task is not None:
            self.open_sample(self.shown_task, int(key))

    def open_sample(self, task_id: str, index: int) -> None:
        self.app.push_screen(SampleScreen(self.eval_id, task_id, index))


class SampleScreen(_Screen):
    """One sample's trajectory: every reply and what the environment answered."""

    BINDINGS = keys.bindings(keys.SAMPLE)
    DEFAULT_CSS = """
    SampleScreen #sample-title { height: auto; padding: 0 1; background: $boost; }
    SampleScreen #sample-body { height: 1fr; padding: 0 1; }
    """

    def __init__(self, eval_id: int, task_id: str, index: int) -> None:
        super().__init__()
        self.eval_id, self.task_id, self.index = eval_id, task_id, index
        self.text = Text()  # the trajectory as shown

    def compose(self) -> ComposeResult:
        yield Static(id="sample-title")
        with VerticalScroll(id="sample-body"):
            yield Static(id="sample-steps")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        sample = self.leafe.store.eval_sample(self.eval_id, self.task_id, self.index)
        outcome = ("✓ success", "bold green") if sample.success else ("✗ failure", "bold red")
        self.query_one("#sample-title", Static).update(
            Text.assemble(
                (f"evaluation {self.eval_id} ", "bold green"),
                (f"{self.task_id} sample {self.index}  ", "bold"),
                outcome,
                (f"  {sample.steps} steps, {sample.generated_tokens} tokens, {sample.seconds:.1f} s", "dim"),
            )  # fmt: skip
        )
        self.text = Text()
        for number, turn in enumerate(sample.trajectory, start=1):
            self.text.append(f" step {number} \n", style="bold reverse")
            self.text.append("reply\n", style="bold cyan")
            self.text.append(turn.get("reply", "") + "\n")
            self.text.append("environment\n", style="bold yellow")
            self.text.append(turn.get("observation", "") + "\n\n")
        if not sample.trajectory:
            self.text.append("no steps were recorded for this sample", style="dim")
        self.query_one("#sample-steps", Static).update(self.text)
        self.query_one("#sample-body", VerticalScroll).focus()
