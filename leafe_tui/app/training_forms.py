"""The small dialogs of the training screen: the new-job form, the cancel confirmation, an adapter.

Each is a modal that answers through ``dismiss``; none touches the store or starts anything, so the
screen decides what happens (and tests can drive each on its own).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, Select, Static

from leafe_tui.app import keys
from trainer.train import METHODS, TrainConfig, TrainError

DIALOG_CSS = """
{name} {{
    align: center middle;
}}
{name} .dialog {{
    width: 96;
    height: auto;
    max-height: 90%;
    overflow-y: auto;
    padding: 1 2;
    border: round $accent;
    background: $surface;
}}
{name} .dialog-buttons {{
    height: auto;
    margin-top: 1;
}}
{name} .dialog-buttons Button {{
    margin-right: 2;
}}
"""


@dataclass(frozen=True)
class JobRequest:
    """What the new-job form was submitted with; ``base`` empty means the model of the runs."""

    base: str
    method: str
    config: TrainConfig


def _whole(text: str, what: str, *, optional: bool = False) -> int | None:
    text = text.strip()
    if not text and optional:
        return None
    try:
        return int(text)
    except ValueError:
        raise TrainError(f"{what} must be a whole number, not {text!r}") from None


def _number(text: str, what: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        raise TrainError(f"{what} must be a number, not {text.strip()!r}") from None


def parse_request(base: str, method: str, epochs: str, lr: str, rank: str, max_steps: str) -> JobRequest:
    """The form's fields as a request; a bad value is a TrainError with one line (TrainConfig's own
    checks included, so the form says what ``leafe train`` would)."""
    config = TrainConfig(
        epochs=_whole(epochs, "epochs") or 0,
        lr=_number(lr, "lr"),
        rank=_whole(rank, "rank") or 0,
        max_steps=_whole(max_steps, "max steps", optional=True),
    )
    return JobRequest(base.strip(), method, config)


class NewJobForm(ModalScreen[JobRequest | None]):
    """Settings of a new job built from the approved branches (defaults: ``leafe train``'s)."""

    BINDINGS = keys.bindings(keys.NEW_JOB)
    DEFAULT_CSS = (
        DIALOG_CSS.format(name="NewJobForm")
        + """
    NewJobForm .field {
        height: auto;
        margin-top: 1;
    }
    NewJobForm .field Label {
        width: 14;
    }
    NewJobForm .field Input, NewJobForm .field Select {
        width: 1fr;
    }
    """
    )

    def __init__(self, base: str, runs: int) -> None:
        super().__init__()
        self.base = base
        self.runs = runs

    def compose(self) -> ComposeResult:
        defaults = TrainConfig()
        with Vertical(classes="dialog"):
            yield Label(Text("New training job from the approved branches", style="bold"))
            yield Static(
                Text(
                    f"Builds a dataset from the branches a person approved in the {self.runs} run(s) of "
                    "this database, then trains a LoRA adapter on it in a worker process that keeps "
                    "going when this window closes.",
                    style="dim",
                )
            )
            fields = (
                (
                    "base model",
                    Input(self.base, placeholder="the model of the runs", id="job-base", compact=True),
                ),
                (
                    "method",
                    Select(
                        [(m, m) for m in METHODS],
                        value="auto",
                        allow_blank=False,
                        id="job-method",
                        compact=True,
                    ),
                ),
                ("epochs", Input(str(defaults.epochs), id="job-epochs", compact=True)),
                ("lr", Input(str(defaults.lr), id="job-lr", compact=True)),
                ("rank", Input(str(defaults.rank), id="job-rank", compact=True)),
                (
                    "max steps",
                    Input(
                        "",
                        placeholder="optional: stop after this many steps",
                        id="job-max-steps",
                        compact=True,
                    ),
                ),
            )
            for name, widget in fields:
                with Horizontal(classes="field"):
                    yield Label(name)
                    yield widget
            with Horizontal(classes="dialog-buttons"):
                yield Button("Build and train", id="start", variant="primary")
                yield Button("Cancel", id="cancel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#job-base", Input).focus()

    def _value(self, ident: str) -> str:
        return self.query_one(f"#{ident}", Input).value

    def action_start(self) -> None:
        method = self.query_one("#job-method", Select).value
        try:
            request = parse_request(
                self._value("job-base"),
                str(method),
                self._value("job-epochs"),
                self._value("job-lr"),
                self._value("job-rank"),
                self._value("job-max-steps"),
            )
        except TrainError as exc:
            self.notify(str(exc), severity="error")
            return
        self.dismiss(request)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_start()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_cancel()


class ConfirmCancel(ModalScreen[bool]):
    """Asks before a job is cancelled (a running one stops at its next step, resumable)."""

    BINDINGS = keys.bindings(keys.CONFIRM)
    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmCancel")

    def __init__(self, question: Text) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel the job", id="yes", variant="error")
                yield Button("Keep it", id="no")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_yes(self) -> None:
        self.dismiss(True)

    def action_no(self) -> None:
        self.dismiss(False)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


class AdapterDetails(ModalScreen[str | None]):
    """An adapter's details and the command that explores with it; answers the task to explore
    now with the adapter, or None."""

    BINDINGS = keys.bindings(keys.ADAPTER)
    DEFAULT_CSS = (
        DIALOG_CSS.format(name="AdapterDetails")
        + """
    AdapterDetails .field {
        height: auto;
        margin-top: 1;
    }
    AdapterDetails .field Label {
        width: 6;
    }
    """
    )

    def __init__(self, details: Text, task: str, can_explore: bool) -> None:
        super().__init__()
        self.details = details
        self.default_task = task
        self.can_explore = can_explore

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.details, id="adapter-details")
            with Horizontal(classes="field"):
                yield Label("task")
                yield Input(
                    self.default_task, placeholder="e.g. sokoban/fixed-2", id="adapter-task", compact=True
                )
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    "Explore with it", id="explore", variant="primary", disabled=not self.can_explore
                )
                yield Button("Close", id="close")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#close" if not self.can_explore else "#adapter-task").focus()

    def action_explore(self) -> None:
        task = self.query_one("#adapter-task", Input).value.strip()
        if not self.can_explore:
            self.notify("this adapter has no GGUF file to load", severity="warning")
        elif not task:
            self.notify("give a task to explore", severity="warning")
        else:
            self.dismiss(task)

    def action_close(self) -> None:
        self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_explore()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "explore":
            self.action_explore()
        else:
            self.action_close()
