"""One run's rollback tree in memory: the single read model of a run.

The dataset builder, the terminal app, ``leafe tree`` and the live view all need the same few
things of a run: its nodes and branches, which node follows which, the branches that roll back to a
node, the path from the root to a node, and the experience summaries in force at each step of a
branch. ``RunTree.load`` reads them once; ``add_node``/``set_branch``/``add_reflection`` keep the tree
current while an explorer writes, so a live view never re-reads the whole run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any, Self

from engine.prompts import chain_guidance
from engine.store import Branch, Node, Store


class RunTree:
    """Nodes, branches and reflections of one run, with the structure every reader walks."""

    def __init__(self, run: dict[str, Any]) -> None:
        self.run = run
        self.run_id: int = run["id"]
        self.nodes: dict[int, Node] = {}
        self.branches: dict[int, Branch] = {}
        self.reflections: dict[int, dict[str, Any]] = {}
        self.reflection_at: dict[int, int] = {}  # node id -> id of the reflection made there
        self.steps: dict[int, list[int]] = defaultdict(list)  # branch id -> its node ids by step (no root)
        self.forks: dict[int, list[int]] = defaultdict(list)  # node id -> branches rolling back after it
        self.children: dict[int, list[int]] = defaultdict(list)  # node id -> child node ids
        self.root_id: int | None = None

    # --- loading and live updates -----------------------------------------------------------
    @classmethod
    def load(cls, store: Store, run_id: int) -> Self:
        run = store.get_run(run_id)
        run["status"] = Store.effective_status(run)
        tree = cls(run)
        for branch in store.branches(run_id):
            tree.set_branch(branch)
        for node in store.nodes(run_id):
            tree.add_node(node)
        for row in store.reflections(run_id):
            tree.add_reflection(row)
        return tree

    def add_node(self, node: Node) -> bool:
        """Add a committed node; False when it was already known."""
        if node.id in self.nodes:
            return False
        self.nodes[node.id] = node
        if node.step == 0:
            self.root_id = node.id
        else:
            _insert_sorted(self.steps[node.branch_id], node.id, lambda i: self.nodes[i].step)
        if node.parent_id is not None:
            self.children[node.parent_id].append(node.id)
        return True

    def set_branch(self, branch: Branch) -> bool:
        """Add or update a branch; True when it is new."""
        old = self.branches.get(branch.id)
        self.branches[branch.id] = branch
        if old is not None and old.from_node_id != branch.from_node_id:
            self.forks[old.from_node_id].remove(branch.id)
            old = None
        if old is None:
            _insert_sorted(self.forks[branch.from_node_id], branch.id, lambda i: i)
            return True
        return False

    def add_reflection(self, row: dict[str, Any]) -> None:
        self.reflections[row["id"]] = row
        self.reflection_at[row["node_id"]] = row["id"]

    # --- paths ----------------------------------------------------------------------------------
    @property
    def root(self) -> Node | None:
        return self.nodes.get(self.root_id) if self.root_id is not None else None

    def path(self, node_id: int) -> list[Node]:
        """Nodes from the root observation (step 0) down to ``node_id``, inclusive."""
        out = [self.nodes[node_id]]
        while (parent := out[-1].parent_id) is not None and parent in self.nodes:
            out.append(self.nodes[parent])
        return out[::-1]

    def branch_nodes(self, branch_id: int) -> list[Node]:
        """The steps a branch took itself, in order."""
        return [self.nodes[i] for i in self.steps.get(branch_id, [])]

    def siblings(self, node_id: int) -> list[int]:
        """Nodes sharing ``node_id``'s parent: the alternatives tried at the same point."""
        parent = self.nodes[node_id].parent_id
        return sorted(self.children.get(parent, [])) if parent is not None else [node_id]

    def successes(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.success]

    def first_node(self, branch: Branch) -> Node | None:
        """The first step a branch took after its rollback point."""
        ids = self.steps.get(branch.id, [])
        first = self.nodes[ids[0]] if ids else None
        return first if first is not None and first.parent_id == branch.from_node_id else None

    def original_node(self, branch: Branch) -> Node | None:
        """The reply at τ on the trajectory the branch's reflection looked at."""
        reflection = self.reflections.get(branch.reflection_id) if branch.reflection_id else None
        if reflection is None or branch.rollback_step is None or reflection["node_id"] not in self.nodes:
            return None
        path = self.path(reflection["node_id"])
        return path[branch.rollback_step] if branch.rollback_step < len(path) else None

    # --- guidance -------------------------------------------------------------------------------
    def chain(self, branch_id: int) -> list[Branch]:
        """The branch and the branches it descends from, oldest first."""
        out = [self.branches[branch_id]]
        while (parent := out[-1].parent_branch_id) is not None and parent in self.branches:
            out.append(self.branches[parent])
        return out[::-1]

    def guidance(self, branch_id: int) -> dict[int, list[str]]:
        """The experience summaries shown to the agent on this branch, by the step they precede."""
        return chain_guidance(self.chain(branch_id))

    def guidance_at(self, node: Node) -> list[str]:
        """The summaries in force when the agent chose ``node``'s action (empty at the root)."""
        if node.step == 0 or node.branch_id not in self.branches:
            return []
        placed = self.guidance(node.branch_id)
        return [summary for step in sorted(placed) if step <= node.step for summary in placed[step]]


def _insert_sorted(items: list[int], item: int, sort_key: Callable[[int], Any]) -> None:
    """Insert keeping order; live items nearly always go at the end, so scan from there."""
    position = len(items)
    value = sort_key(item)
    while position and sort_key(items[position - 1]) > value:
        position -= 1
    items.insert(position, item)
