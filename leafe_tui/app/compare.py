"""Two sibling branches (same rollback point) side by side, the first point where they part marked."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from engine.store import Branch, Node
from leafe_tui.app import keys
from leafe_tui.app.model import Comparison, RunIndex, compare, sibling_branches
from leafe_tui.render import OUTCOME_STYLE, node_symbol, short_action

DIVERGENCE_STYLE = "bold black on yellow"
WIDTHS = (6, 26, 26, 26, 26)


def _cell(node: Node | None, width: int) -> tuple[Text, Text]:
    if node is None:
        return Text("—", style="dim"), Text("")
    symbol, style = node_symbol(node.__dict__)
    action = Text.assemble((f"{symbol} ", style), short_action(node.action, width))
    feedback = (node.feedback or "").strip().splitlines()
    text = feedback[0] if feedback else ""
    return action, Text(text if len(text) <= width else text[: width - 1] + "…", style="dim")


def _branch_header(branch: Branch, side: str) -> Text:
    symbol, style = OUTCOME_STYLE.get(branch.outcome, ("…", "yellow"))
    text = Text.assemble(
        (f"{side}: branch #{branch.id}  ", "bold"), (f"{symbol} {branch.outcome or branch.status}", style)
    )
    text.append(f"   review: {branch.review}", style="dim")
    if branch.origin == "person":
        text.append(f"   ✎ re-branch of #{branch.rebranch_of}", style="magenta")
    text.append("\n")
    text.append(f"“{branch.effective_summary or '(no summary: not a rollback branch)'}”", style="italic")
    return text


class CompareTable(DataTable):
    HELP = """
## Compare
Two branches that roll back to the same point, step by step: the shared history first (dim), then
each branch's own steps. The first step where they differ is marked `▶` and highlighted.

`c` compares the left branch with its next sibling, `w` swaps the sides, `escape` closes.
"""


class CompareScreen(Screen[None]):
    """Side-by-side view of ``left`` and ``right`` (sibling branches of one run)."""

    BINDINGS = keys.bindings(keys.COMPARE)

    def __init__(self, index: RunIndex, left_id: int, right_id: int) -> None:
        super().__init__()
        self.index = index
        self.comparison: Comparison = compare(index, left_id, right_id)

    def compose(self) -> ComposeResult:
        with Horizontal(id="compare-heads"):
            yield Static(id="compare-left", classes="compare-head")
            yield Static(id="compare-right", classes="compare-head")
        yield Static(id="compare-note")
        yield CompareTable(id="compare-table", cursor_type="row", show_cursor=False)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(CompareTable)
        names = ("step", "A: action", "A: feedback", "B: action", "B: feedback")
        for name, width in zip(names, WIDTHS, strict=True):
            table.add_column(name, key=name, width=width)
        self.fill()
        table.focus()

    def fill(self) -> None:
        comparison = self.comparison
        self.query_one("#compare-left", Static).update(_branch_header(comparison.left, "A"))
        self.query_one("#compare-right", Static).update(_branch_header(comparison.right, "B"))
        if comparison.divergence is None:
            note = Text("the two branches took the same steps", style="green")
        else:
            note = Text.assemble(
                ("▶ they part at step ", "bold"),
                (str(comparison.divergence_step), DIVERGENCE_STYLE),
                (f"   (rollback point: step {comparison.left.rollback_step or 1})", "dim"),
            )
        self.query_one("#compare-note", Static).update(note)
        table = self.query_one(CompareTable)
        table.clear()
        for position, row in enumerate(comparison.rows):
            left_action, left_feedback = _cell(row.left, WIDTHS[1] - 2)
            right_action, right_feedback = _cell(row.right, WIDTHS[3] - 2)
            step = Text(f"  {row.step}")
            cells = [step, left_action, left_feedback, right_action, right_feedback]
            if row.shared:
                for cell in cells:
                    cell.stylize("dim")
                cells[3] = Text("(shared)", style="dim")
                cells[4] = Text("")
            if position == comparison.divergence:
                cells[0] = Text(f"▶ {row.step}")
                for cell, width in zip(cells, WIDTHS, strict=True):
                    cell.pad_right(width - cell.cell_len)
                    cell.stylize(DIVERGENCE_STYLE)
            table.add_row(*cells, key=str(position))
        outcome = [Text("end", style="bold")]
        for branch in (comparison.left, comparison.right):
            symbol, style = OUTCOME_STYLE.get(branch.outcome, ("…", "yellow"))
            outcome += [Text(f"{symbol} {branch.outcome or branch.status}", style=style), Text("")]
        table.add_row(*outcome, key="end")

    def action_close(self) -> None:
        self.dismiss(None)

    def action_swap(self) -> None:
        self.comparison = compare(self.index, self.comparison.right.id, self.comparison.left.id)
        self.fill()

    def action_next_sibling(self) -> None:
        left = self.comparison.left.id
        siblings = [b for b in sibling_branches(self.index, left) if b != left]
        if len(siblings) < 2:
            self.notify("no other sibling to compare with", timeout=2)
            return
        following = siblings[(siblings.index(self.comparison.right.id) + 1) % len(siblings)]
        self.comparison = compare(self.index, left, following)
        self.fill()
