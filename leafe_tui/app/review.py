"""Review of branches: approve / reject, bulk approval of successful ones, and the counts bar."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import Static

from engine.store import Store
from leafe_tui.app.model import RunIndex
from leafe_tui.styles import status_style


class ReviewChanged(Message):
    """Branches got a new review state (already written to the store)."""

    def __init__(self, run_id: int, branch_ids: list[int], review: str) -> None:
        super().__init__()
        self.run_id, self.branch_ids, self.review = run_id, branch_ids, review


def toggle_review(store: Store, index: RunIndex, branch_id: int, review: str) -> str:
    """Set ``review`` on a branch, or back to pending when it already has it; returns the new state."""
    new = "pending" if index.branches[branch_id].review == review else review
    store.set_review(branch_id, new)
    index.set_branch(store.branch(branch_id))
    return new


def approve_successful(store: Store, index: RunIndex) -> tuple[list[int], int]:
    """Approve every pending branch that reached success; returns them and how many rejected ones
    were left alone (a person's rejection is not overruled in bulk)."""
    approved, kept = [], 0
    for branch in list(index.branches.values()):
        if branch.outcome != "success" or branch.review == "approved":
            continue
        if branch.review == "rejected":
            kept += 1
            continue
        store.set_review(branch.id, "approved")
        index.set_branch(store.branch(branch.id))
        approved.append(branch.id)
    return approved, kept


class RunStatusBar(Static):
    """The run, its figures, the review counts and the tree's filter: always on screen."""

    def show(self, index: RunIndex, filter_: str) -> None:
        run = index.run
        totals = index.totals
        counts = index.review_counts()
        budget = run["config"].get("budget")
        episodes = sum(1 for b in index.branches.values() if b.status in ("running", "done"))
        run_style = status_style(run["status"])
        reused = f"{100 * totals.cached_tokens / totals.prompt_tokens:.0f}%" if totals.prompt_tokens else "—"
        text = Text.assemble(
            (f"run {run['id']} ", "bold"),
            (run["task_id"], "bold blue"),
            (f"  {run['model']}  ", "dim"),
            (run["status"], run_style),
            f"   episodes {episodes}/{budget}  steps {totals.steps}",
            (
                f"   prompt {totals.prompt_tokens} tok ({reused} reused)  generated "
                f"{totals.generated_tokens} tok  {totals.seconds:.1f}s",
                "dim",
            ),
            "\nreview  ",
            (f"{counts['pending']} pending", "yellow"),
            "  ",
            (f"{counts['approved']} approved", "green"),
            "  ",
            (f"{counts['rejected']} rejected", "red"),
            "  ",
            (f"{counts['successful']} successful", "bold green" if counts["successful"] else "dim"),
            ("   filter: ", "dim"),
            (filter_, "bold reverse" if filter_ != "all" else "bold"),
        )
        self.update(text)
