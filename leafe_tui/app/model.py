"""A run held in memory as an index the tree, the inspector and the compare view read from.

The index is plain Python (no Textual), built once from the store when a run is opened and then
updated one event at a time while an explorer writes, so the screen never re-reads the whole run.

The tree shows the rollback tree the way ``leafe tree`` prints it: the run's first observation is
the root; under it the episodes that start there (the root episode, restarts, branches with τ=1);
under an episode its steps; under a step the branches that roll back to the step after it.
Tree entries are addressed by keys: ``("node", id)`` or ``("branch", id)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from engine.errors import SettingError
from engine.run_tree import RunTree
from engine.store import Branch, Node

Key = tuple[str, int]
FILTERS = ("all", "pending", "approved", "successful")


def node_key(node_id: int) -> Key:
    return ("node", node_id)


def branch_key(branch_id: int) -> Key:
    return ("branch", branch_id)


@dataclass
class Totals:
    steps: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    seconds: float = 0.0

    def add(self, node: Node) -> None:
        if node.step == 0:
            return
        self.steps += 1
        self.prompt_tokens += node.prompt_tokens
        self.cached_tokens += node.cached_tokens
        self.generated_tokens += node.generated_tokens
        self.seconds += node.seconds


class RunIndex(RunTree):
    """The run's tree (``engine.run_tree``) with the display keys, filters and totals the views need."""

    def __init__(self, run: dict[str, Any]) -> None:
        super().__init__(run)
        self.totals = Totals()

    def add_node(self, node: Node) -> bool:
        """Add a committed node; False when it was already known."""
        if not super().add_node(node):
            return False
        self.totals.add(node)
        return True

    # --- structure ----------------------------------------------------------------------------
    def display_parent(self, key: Key) -> Key | None:
        """The key of the entry ``key`` sits under in the tree (None for the root)."""
        kind, ident = key
        if kind == "node":
            node = self.nodes[ident]
            return None if node.step == 0 else branch_key(node.branch_id)
        branch = self.branches[ident]
        if branch.from_node_id == self.root_id or branch.from_node_id not in self.nodes:
            return node_key(self.root_id) if self.root_id is not None else None
        return node_key(branch.from_node_id)

    def display_children(self, key: Key, visible: set[int] | None = None) -> list[Key]:
        """Entries under ``key``; ``visible`` limits branches to a filtered set (None: all)."""
        kind, ident = key
        if kind == "branch":
            return [node_key(i) for i in self.steps.get(ident, [])]
        forks = self.forks.get(ident, [])
        return [branch_key(b) for b in forks if visible is None or b in visible]

    def has_children(self, key: Key, visible: set[int] | None = None) -> bool:
        kind, ident = key
        if kind == "branch":
            return True  # an episode that has no steps yet may still get some
        return any(visible is None or b in visible for b in self.forks.get(ident, []))

    def ancestors(self, key: Key) -> list[Key]:
        """Keys from the root down to ``key``'s parent."""
        chain: list[Key] = []
        parent = self.display_parent(key)
        while parent is not None:
            chain.append(parent)
            parent = self.display_parent(parent)
        return chain[::-1]

    def order(self, visible: set[int] | None = None) -> list[Key]:
        """Every entry in the order the fully expanded tree lists them."""
        if self.root_id is None:
            return []
        out: list[Key] = []
        stack = [node_key(self.root_id)]
        while stack:
            key = stack.pop()
            out.append(key)
            stack.extend(reversed(self.display_children(key, visible)))
        return out

    def branch_of(self, key: Key) -> Branch | None:
        """The branch an entry belongs to (a step's episode); None for the root observation."""
        kind, ident = key
        if kind == "branch":
            return self.branches.get(ident)
        node = self.nodes[ident]
        return None if node.step == 0 else self.branches.get(node.branch_id)

    def trajectory(self, node_id: int) -> list[int]:
        """Node ids from the root observation down to ``node_id``."""
        return [node.id for node in self.path(node_id)]

    def is_rollback_point(self, node_id: int) -> bool:
        return node_id != self.root_id and bool(self.forks.get(node_id))

    # --- review -------------------------------------------------------------------------------
    def review_counts(self) -> dict[str, int]:
        counts = {"pending": 0, "approved": 0, "rejected": 0, "successful": 0, "branches": 0}
        for branch in self.branches.values():
            counts["branches"] += 1
            counts[branch.review] = counts.get(branch.review, 0) + 1
            counts["successful"] += branch.outcome == "success"
        return counts

    def matches(self, branch: Branch, filter_: str) -> bool:
        if filter_ == "pending":
            return branch.review == "pending"
        if filter_ == "approved":
            return branch.review == "approved"
        if filter_ == "successful":
            return branch.outcome == "success"
        return True

    def visible_branches(self, filter_: str) -> set[int] | None:
        """Branches shown under ``filter_``: the matching ones and the episodes they hang from."""
        if filter_ == "all":
            return None
        visible: set[int] = set()
        for branch in self.branches.values():
            if self.matches(branch, filter_):
                visible.add(branch.id)
                visible.update(self.context_of(branch.id))
        return visible

    def context_of(self, branch_id: int) -> Iterable[int]:
        """The branches the tree shows above ``branch_id`` (the episodes its rollback point is in)."""
        for key in self.ancestors(branch_key(branch_id)):
            if key[0] == "branch":
                yield key[1]


@dataclass(frozen=True)
class CompareRow:
    """One step of two sibling branches side by side (``shared`` rows are their common history)."""

    step: int
    left: Node | None
    right: Node | None
    shared: bool = False

    @property
    def same(self) -> bool:
        if self.shared:
            return True
        if self.left is None or self.right is None:
            return False
        a, b = self.left, self.right
        return (a.action, a.valid, a.feedback, a.success) == (b.action, b.valid, b.feedback, b.success)


@dataclass(frozen=True)
class Comparison:
    left: Branch
    right: Branch
    rows: list[CompareRow]
    divergence: int | None  # index in rows of the first step where the branches differ

    @property
    def divergence_step(self) -> int | None:
        return None if self.divergence is None else self.rows[self.divergence].step


def sibling_branches(index: RunIndex, branch_id: int) -> list[int]:
    """Branches rolling back to the same point as ``branch_id`` (itself included), oldest first."""
    return list(index.forks.get(index.branches[branch_id].from_node_id, []))


def compare(index: RunIndex, left_id: int, right_id: int) -> Comparison:
    """Two sibling branches step by step, with the first step where they part."""
    left, right = index.branches[left_id], index.branches[right_id]
    if left.from_node_id != right.from_node_id:
        raise SettingError(f"branches #{left_id} and #{right_id} do not start from the same point")
    rows = [
        CompareRow(index.nodes[i].step, index.nodes[i], index.nodes[i], shared=True)
        for i in index.trajectory(left.from_node_id)
        if index.nodes[i].step > 0
    ]
    a = [index.nodes[i] for i in index.steps.get(left_id, [])]
    b = [index.nodes[i] for i in index.steps.get(right_id, [])]
    first = rows[-1].step + 1 if rows else 1
    for offset in range(max(len(a), len(b))):
        rows.append(
            CompareRow(
                first + offset,
                a[offset] if offset < len(a) else None,
                b[offset] if offset < len(b) else None,
            )
        )
    divergence = next((i for i, row in enumerate(rows) if not row.same), None)
    return Comparison(left, right, rows, divergence)
