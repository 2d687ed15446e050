"""One run: the status bar, the rollback tree, the inspector; review, edit, re-branch, compare."""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Tree

from engine.events import BranchChanged, ExplorerEvent, NodeCommitted, ReflectionMade, RunChanged
from engine.store import Branch, Store, StoreError
from leafe_tui.app import keys
from leafe_tui.app.compare import CompareScreen
from leafe_tui.app.inspector import Inspector
from leafe_tui.app.model import FILTERS, Key, RunIndex, branch_key, node_key, sibling_branches
from leafe_tui.app.review import ReviewChanged, RunStatusBar, approve_successful, toggle_review
from leafe_tui.app.summary_editor import SummaryEdit, SummaryEditor, SummarySaved
from leafe_tui.app.tree_view import RunTree
from leafe_tui.app.work_bar import WorkBar
from leafe_tui.app.worker import ExploreJob

if TYPE_CHECKING:
    from leafe_tui.app.app import LeafeApp


class RunScreen(Screen[None]):
    """The run ``run_id`` of the app's database."""

    BINDINGS = keys.bindings(keys.RUN)

    def __init__(self, store: Store, run_id: int, *, eager_limit: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.run_id = run_id
        self.index = RunIndex.load(store, run_id)
        self._eager_limit = eager_limit
        self._status_pending = False

    @property
    def leafe(self) -> LeafeApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield RunStatusBar(id="run-status")
        yield WorkBar()
        with Horizontal(id="run-body"):
            if self._eager_limit is None:
                yield RunTree(self.index, id="run-tree")
            else:
                yield RunTree(self.index, id="run-tree", eager_limit=self._eager_limit)
            yield Inspector(self.index, self.store, id="inspector")
        yield Footer(compact=True)

    @property
    def run_tree(self) -> RunTree:
        return self.query_one(RunTree)

    @property
    def inspector(self) -> Inspector:
        return self.query_one(Inspector)

    def on_mount(self) -> None:
        self.update_status()
        self.run_tree.focus()
        self.inspector.show(self.run_tree.current)

    def update_status(self) -> None:
        self._status_pending = False
        self.query_one(RunStatusBar).show(self.index, self.run_tree.filter)

    def _schedule_status(self) -> None:
        """Live updates come many per second; the bar is redrawn once per batch."""
        if not self._status_pending:
            self._status_pending = True
            self.set_timer(0.05, self.update_status)

    # --- cursor -> inspector ---------------------------------------------------------------
    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted[Key]) -> None:
        if event.node.data != self.inspector.key:
            self.inspector.show(event.node.data)

    # --- live updates ---------------------------------------------------------------------------
    def apply_event(self, event: ExplorerEvent) -> list[Key]:
        """Fold one explorer event into the index, then into the tree in place; returns what was added."""
        try:
            new, touched, reset = self._fold(event)
        except (StoreError, sqlite3.Error) as exc:
            self.notify(f"could not read the update: {exc}", severity="error")
            return []
        try:
            tree = self.query_one(RunTree)
        except NoMatches:
            return []  # not composed yet: the tree is built from the index when it mounts
        if reset:
            tree.build()
        tree.remember_cursor()
        added = [key for key in new if tree.add_live(key)]
        for key in touched:
            tree.relabel(key)
        if self.inspector.key in touched:
            self.inspector.refresh_key()
        self._schedule_status()
        if added:
            tree.post_message(RunTree.Grew(added))
        return added

    def _fold(self, event: ExplorerEvent) -> tuple[list[Key], set[Key], bool]:
        """Update the index: keys of new entries (parents first), keys to relabel, whether to rebuild."""
        index = self.index
        new: list[Key] = []
        touched: set[Key] = set()
        reset = False
        if isinstance(event, NodeCommitted):
            node = event.node
            if node.branch_id not in index.branches:
                reset = self._fold_branch(self.store.branch(node.branch_id), new, touched)
            if index.add_node(node):
                new.append(node_key(node.id))
                touched.add(branch_key(node.branch_id))
        elif isinstance(event, BranchChanged):
            reset = self._fold_branch(self.store.branch(event.branch_id), new, touched)
        elif isinstance(event, ReflectionMade):
            row = self.store.reflection_for(event.node_id)
            if row is not None:
                index.add_reflection(row)
                touched.add(node_key(row["node_id"]))
        elif isinstance(event, RunChanged):
            run = self.store.get_run(self.run_id)
            run["status"] = Store.effective_status(run)
            index.run = run
            reset = self._reload_nodes()
            for branch in self.store.branches(self.run_id):  # some change without an event (skipped)
                if branch != index.branches.get(branch.id):
                    reset = self._fold_branch(branch, new, touched) or reset
            if index.root_id is not None:
                touched.add(node_key(index.root_id))
        return new, touched, reset

    def _fold_branch(self, branch: Branch, new: list[Key], touched: set[Key]) -> bool:
        reset = False
        if self.index.root_id is None or branch.from_node_id not in self.index.nodes:
            reset = self._reload_nodes()
        if self.index.set_branch(branch):
            new.append(branch_key(branch.id))
            touched.add(node_key(branch.from_node_id))
        touched.add(branch_key(branch.id))
        return reset

    def _reload_nodes(self) -> bool:
        """Read nodes committed without an event (a run's first observation); True when the root
        appeared just now (the tree then has to be built)."""
        if self.index.root_id is not None:
            return False
        for node in self.store.nodes(self.run_id):
            self.index.add_node(node)
        return self.index.root_id is not None

    # --- review -------------------------------------------------------------------------------
    def _current_branch_id(self) -> int | None:
        key = self.run_tree.current
        branch = self.index.branch_of(key) if key is not None else None
        if branch is None:
            self.notify("put the cursor on a branch or one of its steps", severity="warning", timeout=3)
            return None
        return branch.id

    def _after_review(self, branch_ids: list[int], review: str) -> None:
        for branch_id in branch_ids:
            self.run_tree.relabel(branch_key(branch_id))
        if self.run_tree.filter != "all":
            self.run_tree.set_filter(self.run_tree.filter)
        self.inspector.refresh_key()
        self.update_status()
        self.post_message(ReviewChanged(self.run_id, branch_ids, review))

    def action_approve(self) -> None:
        self._review("approved")

    def action_reject(self) -> None:
        self._review("rejected")

    def _review(self, review: str) -> None:
        branch_id = self._current_branch_id()
        if branch_id is None:
            return
        try:
            new = toggle_review(self.store, self.index, branch_id, review)
        except (StoreError, sqlite3.Error) as exc:
            self.notify(str(exc), severity="error")
            return
        self.notify(f"branch #{branch_id}: {new}", timeout=2)
        self._after_review([branch_id], new)

    def action_approve_successful(self) -> None:
        try:
            approved, kept = approve_successful(self.store, self.index)
        except (StoreError, sqlite3.Error) as exc:
            self.notify(str(exc), severity="error")
            return
        note = f" ({kept} rejected left as they are)" if kept else ""
        self.notify(f"approved {len(approved)} successful branch(es){note}", timeout=3)
        self._after_review(approved, "approved")

    def action_cycle_filter(self) -> None:
        self.set_filter(FILTERS[(FILTERS.index(self.run_tree.filter) + 1) % len(FILTERS)])

    def set_filter(self, filter_: str) -> None:
        self.run_tree.set_filter(filter_)
        self.update_status()
        self.inspector.show(self.run_tree.current)

    # --- summaries and re-branching -----------------------------------------------------------
    def _rollback_branch(self) -> int | None:
        branch_id = self._current_branch_id()
        if branch_id is None:
            return None
        if self.index.branches[branch_id].kind != "rollback":
            self.notify(
                "only rollback branches have an experience summary; this is the "
                f"{self.index.branches[branch_id].kind} episode",
                severity="warning",
                timeout=3,
            )
            return None
        return branch_id

    def action_edit_summary(self) -> None:
        self._open_editor(rebranch_first=False)

    def action_rebranch(self) -> None:
        if self.leafe.busy:
            self.notify("wait for the running work to end (or stop it) to re-branch", severity="warning")
            return
        self._open_editor(rebranch_first=True)

    def _open_editor(self, *, rebranch_first: bool) -> None:
        branch_id = self._rollback_branch()
        if branch_id is not None:
            editor = SummaryEditor(self.index.branches[branch_id], rebranch_first=rebranch_first)
            self.app.push_screen(editor, self._editor_closed)

    def _editor_closed(self, result: SummaryEdit | None) -> None:
        if result is None:
            return
        if result.rebranch:
            self.rebranch(result.branch_id, result.text)
        else:
            self.save_summary(result.branch_id, result.text)

    def save_summary(self, branch_id: int, text: str) -> None:
        if text == (self.index.branches[branch_id].effective_summary or ""):
            self.notify("summary unchanged", timeout=2)
            return
        try:
            self.store.edit_summary(branch_id, text)
            self.index.set_branch(self.store.branch(branch_id))
        except (StoreError, sqlite3.Error) as exc:
            self.notify(str(exc), severity="error")
            return
        self.run_tree.relabel(branch_key(branch_id))
        self.inspector.refresh_key()
        self.notify(f"branch #{branch_id}: summary saved (the generated one is kept)", timeout=3)
        self.post_message(SummarySaved(self.run_id, branch_id, text))

    def rebranch(self, branch_id: int, text: str) -> None:
        job = ExploreJob("rebranch", run_id=self.run_id, branch_id=branch_id, summary=text)
        if self.leafe.start_job(job):
            self.notify(f"re-branching #{branch_id}: a new sibling explores with your summary", timeout=3)

    def action_resume(self) -> None:
        if self.index.run["status"] == "finished":
            self.notify(f"run {self.run_id} finished; nothing to resume", timeout=3)
            return
        self.leafe.start_job(ExploreJob("resume", run_id=self.run_id))

    # --- compare ------------------------------------------------------------------------------
    def action_compare(self) -> None:
        branch_id = self._current_branch_id()
        if branch_id is None:
            return
        siblings = sibling_branches(self.index, branch_id)
        if len(siblings) < 2:
            self.notify(f"branch #{branch_id} has no sibling from the same rollback point", timeout=3)
            return
        other = siblings[(siblings.index(branch_id) + 1) % len(siblings)]
        self.app.push_screen(CompareScreen(self.index, branch_id, other))

    def action_back(self) -> None:
        self.app.pop_screen()
