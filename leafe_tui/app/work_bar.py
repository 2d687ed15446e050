"""The bar that shows long work (model load, exploration, re-branch) and how to stop it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


@dataclass(frozen=True)
class WorkState:
    """What the background work is doing; ``total`` None while the length is unknown (model load)."""

    text: str
    done: int | None = None
    total: int | None = None
    stopping: bool = False


class WorkBar(Horizontal):
    """Hidden while nothing runs; otherwise a phrase, a progress bar and the stop key."""

    def compose(self) -> ComposeResult:
        yield Label(id="work-text")
        yield ProgressBar(id="work-progress", show_eta=False, show_percentage=False)

    def on_mount(self) -> None:
        self.watch(self.app, "work", self.show, init=True)

    def show(self, state: WorkState | None) -> None:
        self.display = state is not None
        if state is None:
            return
        stop = self.app.keymap_keys("app.stop") if hasattr(self.app, "keymap_keys") else "ctrl+x"
        hint = "stopping after this step…" if state.stopping else f"{stop} stops"
        self.query_one("#work-text", Label).update(f"{state.text}   [dim]{hint}[/]")
        bar = self.query_one(ProgressBar)
        bar.update(total=state.total, progress=state.done or 0)
