"""A modal editor for a branch's experience summary.

Saving records an edit (the generated summary stays; every edit is kept with its time).
"Re-branch" never touches the branch: it asks for a new sibling from the same rollback point that
starts with the text in the editor (Loom's rule: editing what has children makes a sibling).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Label, Static, TextArea

from engine.store import Branch
from leafe_tui.app import keys


@dataclass(frozen=True)
class SummaryEdit:
    """What the editor was closed with: the text, and whether to re-branch with it."""

    branch_id: int
    text: str
    rebranch: bool


class SummarySaved(Message):
    """A person's summary edit was written to the store."""

    def __init__(self, run_id: int, branch_id: int, text: str) -> None:
        super().__init__()
        self.run_id, self.branch_id, self.text = run_id, branch_id, text


class SummaryTextArea(TextArea):
    HELP = """
## Experience summary
The lesson the agent is shown from the rollback step on. Write it as advice to the agent.

- `ctrl+s` saves it as an edit of this branch (the generated text is kept);
- `ctrl+r` starts a new sibling branch from the same rollback point with this text and explores it
  now with the model (the branch you edit stays as it was);
- `escape` closes without saving.
"""


class SummaryEditor(ModalScreen[SummaryEdit | None]):
    """Edit the summary of ``branch``; ``rebranch_first`` makes Re-branch the default button."""

    BINDINGS = keys.bindings(keys.EDITOR)

    def __init__(self, branch: Branch, *, rebranch_first: bool = False) -> None:
        super().__init__()
        self.branch = branch
        self.rebranch_first = rebranch_first

    def compose(self) -> ComposeResult:
        branch = self.branch
        with Vertical(id="editor-dialog"):
            yield Label(
                Text.assemble(
                    (f"Experience summary of branch #{branch.id}", "bold"),
                    (f"   rollback to step {branch.rollback_step}", "cyan"),
                ),
                id="editor-title",
            )
            yield Static(
                Text.assemble(("generated: ", "dim"), (branch.summary or "—", "italic")), id="editor-original"
            )
            area = SummaryTextArea(branch.effective_summary or "", id="editor-text", soft_wrap=True)
            area.show_line_numbers = False
            yield area
            with Horizontal(id="editor-buttons"):
                yield Button("Save", id="save", variant="default" if self.rebranch_first else "primary")
                yield Button(
                    "Re-branch with this",
                    id="rebranch",
                    variant="primary" if self.rebranch_first else "default",
                )
                yield Button("Cancel", id="cancel")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        area = self.query_one(TextArea)
        area.focus()
        area.move_cursor(area.document.end)

    @property
    def text(self) -> str:
        return self.query_one(TextArea).text.strip()

    def _finish(self, rebranch: bool) -> None:
        if not self.text:
            self.notify("the summary is empty", severity="warning")
            return
        self.dismiss(SummaryEdit(self.branch.id, self.text, rebranch))

    def action_save(self) -> None:
        self._finish(rebranch=False)

    def action_save_rebranch(self) -> None:
        self._finish(rebranch=True)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.action_save()
        elif event.button.id == "rebranch":
            self.action_save_rebranch()
        else:
            self.action_cancel()
