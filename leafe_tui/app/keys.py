"""Every key binding of the app in one table, each with an id a user can remap.

Widgets take their ``BINDINGS`` from here, the command palette lists the same table, and the
config file's ``[tui.keys]`` table maps binding ids to other keys::

    [tui.keys]
    "tree.step_next" = "right,ctrl+f"
    "run.approve" = ["y"]

The map is applied with ``App.set_keymap``; unknown ids or non-string keys are a config error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual.binding import Binding

from leafe_tui.config import ConfigError, read_config


@dataclass(frozen=True)
class Key:
    id: str
    key: str
    action: str
    description: str  # short, for the footer
    long: str = ""  # for the command palette and help (the description when empty)
    show: bool = True
    group: str | None = None  # footer group (keys shown together under one description)
    priority: bool = False

    @property
    def title(self) -> str:
        return self.long or self.description


APP = [
    Key("app.help", "f1", "toggle_help", "Help", "Help for the focused widget"),
    Key("app.palette", "ctrl+p", "command_palette", "Commands", show=False, priority=True),
    Key("app.stop", "ctrl+x", "stop_work", "Stop", "Stop the running exploration (resumable)"),
    Key("app.quit", "ctrl+q", "quit", "Quit", show=False, priority=True),
]
RUNS = [
    Key("runs.open", "enter", "open_run", "Open", "Open the run's tree"),
    Key("runs.refresh", "r", "refresh", "Refresh", "Reload the runs list"),
    Key(
        "runs.training",
        "t",
        "app.open_training",
        "Training",
        "Training: jobs and loss curves, a new job from the approved branches, adapters",
    ),
    Key(
        "runs.evaluations",
        "v",
        "app.open_evaluations",
        "Evaluations",
        "Evaluations: Pass@k per task, samples and their trajectories",
    ),
    Key("runs.quit", "q", "app.quit", "Quit"),
]
RUN = [
    Key("run.back", "escape,q", "back", "Runs", "Back to the runs list", show=False),
    Key("run.approve", "a", "approve", "Approve", "Approve the branch (again: back to pending)"),
    Key("run.reject", "x", "reject", "Reject", "Reject the branch (again: back to pending)"),
    Key(
        "run.approve_successful",
        "A",
        "approve_successful",
        "Approve successful",
        "Approve every pending branch that reached success",
        show=False,
    ),
    Key("run.filter", "f", "cycle_filter", "Filter", "Filter the tree: all, pending, approved, successful"),
    Key("run.edit", "e", "edit_summary", "Edit", "Edit the branch's experience summary"),
    Key(
        "run.rebranch",
        "R",
        "rebranch",
        "Re-branch",
        "Re-branch: a new sibling from the same rollback point with an edited summary, explored now",
    ),
    Key("run.compare", "c", "compare", "Compare", "Compare the branch with a sibling side by side"),
    Key("run.resume", "ctrl+r", "resume", "Resume", "Resume this run (after a stop or a crash)", show=False),
]
TREE = [
    Key("tree.step_prev", "h,left", "step_prev", "Step", "Step back along the trajectory", group="Step"),
    Key("tree.step_next", "l,right", "step_next", "Step", "Step forward along the trajectory", group="Step"),
    Key("tree.first_step", "0", "first_step", "First", "First step of the trajectory", group="Ends"),
    Key("tree.last_step", "$", "last_step", "Last", "Last step of the branch", group="Ends"),
    Key("tree.parent", "u,shift+left", "parent", "Parent", "Up to the parent entry", show=False),
    Key("tree.child", "d,shift+right", "child", "Child", "Down to the first child entry", show=False),
    Key(
        "tree.next_sibling",
        "s,shift+down",
        "next_sibling",
        "Sibling",
        "Next sibling: the alternative taken at the same point",
        show=False,
    ),
    Key("tree.next_rollback", "b", "next_rollback", "Next ↺", "Jump to the next rollback point"),
    Key("tree.next_success", "n", "next_success", "Next ✓", "Jump to the next successful step"),
    Key("tree.root", "g,home", "root", "Root", "Jump to the root", show=False),
    Key("tree.toggle", "space", "toggle_node", "Fold", "Fold or unfold the entry", show=False),
    Key("tree.expand_all", "+", "expand_all", "Expand all", show=False),
    Key("tree.collapse_all", "-", "collapse_all", "Collapse all", show=False),
    Key("tree.down", "j", "cursor_down", "Down", show=False),
    Key("tree.up", "k", "cursor_up", "Up", show=False),
]
EDITOR = [
    Key(
        "editor.save",
        "ctrl+s",
        "save",
        "Save",
        "Save the edit (the generated summary is kept)",
        priority=True,
    ),
    Key(
        "editor.rebranch",
        "ctrl+r",
        "save_rebranch",
        "Re-branch",
        "Re-branch with this summary",
        priority=True,
    ),
    Key("editor.cancel", "escape", "cancel", "Cancel"),
]
COMPARE = [
    Key("compare.close", "escape,q", "close", "Close"),
    Key("compare.next", "c", "next_sibling", "Next sibling", "Compare with the next sibling"),
    Key("compare.swap", "w", "swap", "Swap", "Swap the two sides"),
]
TRAINING = [
    Key("training.back", "escape,q", "back", "Back", "Back to where the training screen was opened"),
    Key("training.new", "n", "new_job", "New job", "New training job from the approved branches"),
    Key("training.cancel", "c", "cancel_job", "Cancel job", "Cancel the selected training job (asks first)"),
    Key(
        "training.adapter",
        "o",
        "open_adapter",
        "Adapter",
        "Open the selected job's adapter: files, parity, lineage, explore a task with it",
    ),
    Key("training.refresh", "r", "refresh", "Refresh", "Read the jobs again now", show=False),
]
NEW_JOB = [
    Key("newjob.start", "ctrl+s", "start", "Start", "Build the dataset and start the job", priority=True),
    Key("newjob.cancel", "escape", "cancel", "Cancel"),
]
CONFIRM = [
    Key("confirm.yes", "y", "yes", "Yes"),
    Key("confirm.no", "n,escape", "no", "No"),
]
ADAPTER = [
    Key(
        "adapter.explore",
        "ctrl+r",
        "explore",
        "Explore with it",
        "Explore the task with this adapter loaded",
        priority=True,
    ),
    Key("adapter.close", "escape", "close", "Close"),
]
EVALS = [
    Key("evals.back", "escape,q", "back", "Back", "Back to the runs list"),
    Key(
        "evals.open", "enter", "open", "Open", "Open the evaluation: tasks, samples, trajectories", show=False
    ),
    Key("evals.refresh", "r", "refresh", "Refresh", "Read the evaluations again"),
]
EVAL = [
    Key("eval.back", "escape,q", "back", "Back", "Back to the evaluations"),
    Key("eval.open", "o", "open", "Open sample", "Open the selected sample's trajectory"),
]
SAMPLE = [
    Key("sample.back", "escape,q", "back", "Back", "Back to the evaluation"),
]
GROUPS = {
    "app": APP,
    "runs": RUNS,
    "run": RUN,
    "tree": TREE,
    "editor": EDITOR,
    "compare": COMPARE,
    "training": TRAINING,
    "newjob": NEW_JOB,
    "confirm": CONFIRM,
    "adapter": ADAPTER,
    "evals": EVALS,
    "eval": EVAL,
    "sample": SAMPLE,
}
ALL: dict[str, Key] = {k.id: k for group in GROUPS.values() for k in group}


def bindings(keys: list[Key]) -> list[Binding]:
    """Textual bindings for a group of the table."""
    groups: dict[str, Binding.Group] = {}
    out = []
    for k in keys:
        group = groups.setdefault(k.group, Binding.Group(k.group)) if k.group else None
        out.append(
            Binding(
                k.key,
                k.action,
                k.description,
                show=k.show,
                id=k.id,
                priority=k.priority,
                group=group,
                tooltip=k.title,
            )
        )
    return out


def parse_keymap(table: object, source: str = "config") -> dict[str, str]:
    """Check a ``[tui.keys]`` table: known ids, keys given as a string or a list of strings."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [tui.keys] must be a table of binding id = key")
    keymap: dict[str, str] = {}
    for binding_id, keys in table.items():
        if binding_id not in ALL:
            raise ConfigError(f"{source}: [tui.keys] has an unknown binding id {binding_id!r}")
        if isinstance(keys, list) and keys and all(isinstance(k, str) and k for k in keys):
            keys = ",".join(keys)
        if not isinstance(keys, str) or not keys.strip():
            raise ConfigError(f"{source}: [tui.keys] {binding_id} must be a key or a list of keys")
        keymap[binding_id] = keys
    return keymap


def load_keymap(path: Path | None = None) -> dict[str, str]:
    """The ``[tui.keys]`` table of the config file (see leafe_tui/config.py), or {} when there is none."""
    path, data = read_config(path)
    tui = data.get("tui", {})
    if not isinstance(tui, dict) or "keys" not in tui:
        return {}
    return parse_keymap(tui["keys"], str(path))


def key_for(binding_id: str, keymap: dict[str, str] | None = None) -> str:
    """The key(s) a binding is on now, for help texts and the palette."""
    return (keymap or {}).get(binding_id, ALL[binding_id].key)
