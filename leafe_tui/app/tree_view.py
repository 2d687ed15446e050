"""The rollback tree of one run: built lazily, grown in place while an explorer writes.

A map from index keys to TreeNodes lets a live update add the new node or branch where it belongs
and relabel what changed; the tree is never rebuilt for a live update, so the cursor and every
fold stay as the user left them. Subtrees are materialised when first expanded, which keeps a run
of thousands of steps quick to open.
"""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.store import Branch, Node
from leafe_tui.app import keys
from leafe_tui.app.model import Key, RunIndex, branch_key, node_key, sibling_branches
from leafe_tui.render import branch_label, node_label

REVIEW_BADGE = {"approved": ("  ✔ approved", "bold green"), "rejected": ("  ✘ rejected", "bold red")}
EAGER_LIMIT = 1500  # runs with at most this many steps open fully expanded


HELP = """
## Rollback tree
The run's first observation at the top; under it the episodes; under an episode its steps; under a
step the branches that roll back to the step after it, labelled with their experience summary.

Steps: `✓` success, `✗` failed end, `⚠` invalid action, `·` went on; `↺` marks a rollback point.
`h`/`l` step along the trajectory, `0`/`$` first/last step, `b` next rollback point, `n` next
success, `space` folds. Every key is listed below and can be remapped in `[tui.keys]`.
"""


class RunTree(Tree[Key]):
    """The run's rollback tree (see the module docstring)."""

    HELP = HELP
    BINDINGS = keys.bindings(keys.TREE)

    class Grew(Message):
        """Entries were added to the tree by a live update."""

        def __init__(self, added: list[Key]) -> None:
            super().__init__()
            self.added = added

    def __init__(self, index: RunIndex, *, eager_limit: int = EAGER_LIMIT, id: str | None = None) -> None:
        super().__init__(self._root_label(index), id=id)
        self.index = index
        self.eager_limit = eager_limit
        self.filter = "all"
        self.shown: set[int] | None = None
        self.tnodes: dict[Key, TreeNode[Key]] = {}
        self.populated: set[Key] = set()
        self.guide_depth = 3
        self.auto_expand = False
        self._keep_pending = False

    # --- building -----------------------------------------------------------------------------
    @staticmethod
    def _root_label(index: RunIndex) -> Text:
        run = index.run
        return Text.assemble(
            (f"run {run['id']} ", "bold"),
            (run["task_id"], "bold blue"),
            (f"  {run['model']}  ", "dim"),
            ("step 0: the first observation", "dim"),
        )

    def on_mount(self) -> None:
        self.build()

    def build(self) -> None:
        """Build the tree from the index (on open and when the filter changes, never live)."""
        self.clear()
        self.tnodes.clear()
        self.populated.clear()
        if self.index.root_id is None:
            return
        root_key = node_key(self.index.root_id)
        self.root.data = root_key
        self.root.set_label(self._root_label(self.index))
        self.tnodes[root_key] = self.root
        self._populate(root_key)
        self.root.expand()
        if len(self.index.nodes) <= self.eager_limit:
            for key in self.index.order(self.shown):
                if key in self.tnodes and self.tnodes[key].allow_expand:
                    self._populate(key)
                    self.tnodes[key].expand()
        else:
            for key in list(self.index.display_children(root_key, self.shown)):
                self._populate(key)
                self.tnodes[key].expand()
        self.move_cursor(self.root)

    def _populate(self, key: Key) -> None:
        if key in self.populated or key not in self.tnodes:
            return
        parent = self.tnodes[key]
        for child in self.index.display_children(key, self.shown):
            if child not in self.tnodes:
                self._add(parent, child, append=True)
        self.populated.add(key)

    def _add(self, parent: TreeNode[Key], key: Key, *, append: bool = False) -> TreeNode[Key]:
        before = None
        if not append:  # live additions: keep the index's order among existing siblings
            parent_key = parent.data
            assert parent_key is not None
            siblings = self.index.display_children(parent_key, self.shown)
            later = siblings[siblings.index(key) + 1 :] if key in siblings else []
            before = next((self.tnodes[k] for k in later if k in self.tnodes), None)
        expandable = self.index.has_children(key, self.shown)
        tnode = parent.add(self.label(key), key, before=before, allow_expand=expandable)
        self.tnodes[key] = tnode
        if not expandable:
            self.populated.add(key)
        return tnode

    def reveal(self, key: Key) -> TreeNode[Key] | None:
        """Materialise ``key`` and its ancestors (expanding them), e.g. to move the cursor there."""
        for ancestor in [*self.index.ancestors(key), key]:
            if ancestor not in self.tnodes:
                parent = self.index.display_parent(ancestor)
                if parent is None or parent not in self.tnodes:
                    return None
                self._populate(parent)
                if ancestor not in self.tnodes:
                    return None  # filtered out
            if ancestor != key:
                self._populate(ancestor)
                if not self.tnodes[ancestor].is_expanded:
                    self.tnodes[ancestor].expand()
        return self.tnodes.get(key)

    # --- labels -------------------------------------------------------------------------------
    def label(self, key: Key) -> Text:
        kind, ident = key
        if kind == "node":
            node = self.index.nodes[ident]
            if node.step == 0:
                return self._root_label(self.index)
            return self._node_label(node)
        return self._branch_label(self.index.branches[ident])

    def _node_label(self, node: Node) -> Text:
        parent = self.index.nodes.get(node.parent_id) if node.parent_id is not None else None
        label = node_label(node.__dict__, parent.action if parent else None)
        forks = len(self.index.forks.get(node.id, []))
        if forks:
            label.append(f"  ↺ {forks} branch{'es' if forks > 1 else ''}", style="bold cyan")
        return label

    def _branch_label(self, branch: Branch) -> Text:
        label = branch_label(branch.__dict__)
        if branch.origin == "person":
            label.append(f"  ✎ re-branch of #{branch.rebranch_of}", style="magenta")
        elif branch.summary_edited:
            label.append("  ✎ edited", style="magenta")
        badge = REVIEW_BADGE.get(branch.review)
        if badge:
            label.append(*badge)
        if self.shown is not None and not self.index.matches(branch, self.filter):
            label.stylize("dim")
        return label

    def get_label_width(self, node: TreeNode[Key]) -> int:
        """Width of a line's label for the tree's virtual size: the label and the fold icon.

        Textual renders every label to measure it each time the lines are rebuilt; with thousands
        of entries that dominated a live update, and the label's own width is what it measures.
        """
        label = node.label
        width = label.cell_len if isinstance(label, Text) else len(label)
        return width + (len(self.ICON_NODE) if node.allow_expand else 0)

    def relabel(self, key: Key) -> None:
        if key in self.tnodes:
            self.tnodes[key].set_label(self.label(key))

    # --- live updates -------------------------------------------------------------------------
    def add_live(self, key: Key) -> bool:
        """Show a new index entry if its parent is materialised; True when a TreeNode was added."""
        if key in self.tnodes:
            return False
        if key[0] == "branch" and self.shown is not None:
            branch = self.index.branches[key[1]]
            if not self.index.matches(branch, self.filter):
                return False
            self.shown.add(branch.id)
            self.shown.update(self.index.context_of(branch.id))
            added = self._add_chain(key)
        else:
            added = self._add_under_parent(key)
        return added

    def _add_chain(self, key: Key) -> bool:
        added = False
        for step in [*self.index.ancestors(key), key]:
            if step not in self.tnodes:
                added = self._add_under_parent(step) or added
                if step not in self.tnodes:
                    return added
        return added

    def _add_under_parent(self, key: Key) -> bool:
        parent_key = self.index.display_parent(key)
        parent = self.tnodes.get(parent_key) if parent_key is not None else None
        if parent is None:
            return False
        if not parent.allow_expand:
            parent.allow_expand = True
            if parent_key is not None and parent_key[0] == "node":
                parent.expand()  # a new rollback point opens so the new branch shows up
        if parent_key not in self.populated:
            parent.set_label(self.label(parent_key))  # children come when it is expanded
            return False
        tnode = self._add(parent, key)
        if key[0] == "branch":  # a new episode opens, so its steps show up as they come
            self._populate(key)
            tnode.expand()
        return True

    def remember_cursor(self) -> None:
        """Before a batch of live changes: keep the cursor's row on screen where it is."""
        if self._keep_pending or self.cursor_node is None:
            return
        row = self.cursor_node.line - round(self.scroll_offset.y)
        if 0 <= row < self.size.height:
            self._keep_pending = True
            self.call_after_refresh(self._restore_row, self.cursor_node, row)

    def _restore_row(self, tnode: TreeNode[Key], row: int) -> None:
        self._keep_pending = False
        _ = self.last_line  # builds the lines so the node knows its new line
        if tnode is self.cursor_node and tnode.line >= 0:
            target = max(0, tnode.line - row)
            if target != round(self.scroll_offset.y):
                self.scroll_to(y=target, animate=False, immediate=True)

    # --- filter -------------------------------------------------------------------------------
    def set_filter(self, filter_: str) -> None:
        current = self.cursor_node.data if self.cursor_node is not None else None
        self.filter = filter_
        self.shown = self.index.visible_branches(filter_)
        self.build()
        if current is not None:
            for key in [current, *reversed(self.index.ancestors(current))]:
                if self.reveal(key) is not None:
                    self.go(key)
                    break

    # --- cursor helpers -----------------------------------------------------------------------
    @property
    def current(self) -> Key | None:
        return self.cursor_node.data if self.cursor_node is not None else None

    def go(self, key: Key) -> bool:
        tnode = self.reveal(key)
        if tnode is None:
            self.notify("that entry is hidden by the filter", severity="warning")
            return False
        _ = self.last_line  # lines must be built before the cursor can move onto a new node
        self.move_cursor(tnode)
        return True

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Key]) -> None:
        if event.node.data is not None:
            self._populate(event.node.data)

    def on_tree_node_collapsed(self, event: Tree.NodeCollapsed[Key]) -> None:
        cursor = self.cursor_node
        while cursor is not None and cursor is not event.node:
            cursor = cursor.parent
        if cursor is event.node and self.cursor_node is not event.node:
            _ = self.last_line
            self.move_cursor(event.node)

    # --- actions: stepping along a trajectory -----------------------------------------------
    def _first_step_of(self, branch_id: int) -> Key | None:
        steps = self.index.steps.get(branch_id, [])
        return node_key(steps[0]) if steps else None

    def _root_episode(self) -> int | None:
        root = self.index.root_id
        forks = self.index.forks.get(root, []) if root is not None else []
        return forks[0] if forks else None

    def action_step_next(self) -> None:
        key = self.current
        if key is None:
            return
        kind, ident = key
        if kind == "branch":
            target = self._first_step_of(ident)
        elif ident == self.index.root_id:
            episode = self._root_episode()
            target = self._first_step_of(episode) if episode is not None else None
        else:
            node = self.index.nodes[ident]
            steps = self.index.steps[node.branch_id]
            position = steps.index(ident)
            target = node_key(steps[position + 1]) if position + 1 < len(steps) else None
        if target is None:
            self.notify("last step of this branch", timeout=2)
        else:
            self.go(target)

    def action_step_prev(self) -> None:
        key = self.current
        if key is None:
            return
        kind, ident = key
        if kind == "branch":
            target = node_key(self.index.branches[ident].from_node_id)
        else:
            parent = self.index.nodes[ident].parent_id
            target = node_key(parent) if parent is not None else None
        if target is None or target[1] not in self.index.nodes:
            self.notify("this is the first observation", timeout=2)
        else:
            self.go(target)

    def _trajectory_end(self, key: Key) -> tuple[list[int], int | None]:
        """The trajectory through ``key`` and the branch whose end it runs to."""
        kind, ident = key
        if kind == "branch":
            steps = self.index.steps.get(ident, [])
            anchor = steps[0] if steps else self.index.branches[ident].from_node_id
            return self.index.trajectory(anchor), ident
        if ident == self.index.root_id:
            episode = self._root_episode()
            steps = self.index.steps.get(episode, []) if episode is not None else []
            return self.index.trajectory(steps[0]) if steps else [ident], episode
        return self.index.trajectory(ident), self.index.nodes[ident].branch_id

    def action_first_step(self) -> None:
        if self.current is None:
            return
        path, _ = self._trajectory_end(self.current)
        self.go(node_key(path[1] if len(path) > 1 else path[0]))

    def action_last_step(self) -> None:
        if self.current is None:
            return
        _, branch = self._trajectory_end(self.current)
        steps = self.index.steps.get(branch, []) if branch is not None else []
        if steps:
            self.go(node_key(steps[-1]))

    # --- actions: the tree's own structure ------------------------------------------------
    def action_parent(self) -> None:
        if self.cursor_node is not None and self.cursor_node.parent is not None:
            self.move_cursor(self.cursor_node.parent)

    def action_child(self) -> None:
        key = self.current
        if key is None or self.cursor_node is None:
            return
        self._populate(key)
        if not self.cursor_node.children:
            self.notify("nothing under this entry", timeout=2)
            return
        self.cursor_node.expand()
        _ = self.last_line
        self.move_cursor(self.cursor_node.children[0])

    def action_next_sibling(self) -> None:
        """Branches: the next branch from the same rollback point; steps: the alternative taken
        at the same point by another branch (or the next row when there is none)."""
        key = self.current
        if key is None or self.cursor_node is None:
            return
        kind, ident = key
        if kind == "branch":
            others = [b for b in sibling_branches(self.index, ident) if self._shown(branch_key(b))]
            if len(others) > 1:
                self.go(branch_key(others[(others.index(ident) + 1) % len(others)]))
                return
        elif ident != self.index.root_id:
            others = [n for n in self.index.siblings(ident) if self._shown(node_key(n))]
            if len(others) > 1:
                self.go(node_key(others[(others.index(ident) + 1) % len(others)]))
                return
        sibling = self.cursor_node.next_sibling
        if sibling is not None:
            self.move_cursor(sibling)
        else:
            self.notify("no next sibling", timeout=2)

    def _shown(self, key: Key) -> bool:
        branch = self.index.branch_of(key)
        return self.shown is None or branch is None or branch.id in self.shown

    # --- actions: jumps -------------------------------------------------------------------
    def _jump(self, wanted, what: str) -> None:
        order = self.index.order(self.shown)
        if not order:
            return
        start = order.index(self.current) + 1 if self.current in order else 0
        for key in order[start:] + order[:start]:
            if key != self.current and wanted(key):
                self.go(key)
                return
        self.notify(f"no {what}", timeout=2)

    def action_next_rollback(self) -> None:
        self._jump(lambda k: k[0] == "node" and self.index.is_rollback_point(k[1]), "rollback point")

    def action_next_success(self) -> None:
        self._jump(lambda k: k[0] == "node" and self.index.nodes[k[1]].success, "successful step")

    def action_root(self) -> None:
        self.move_cursor(self.root)
        self.scroll_home(animate=False)

    def action_expand_all(self) -> None:
        for key in self.index.order(self.shown):
            if key not in self.tnodes:
                parent = self.index.display_parent(key)
                if parent in self.tnodes:
                    self._add(self.tnodes[parent], key, append=True)
            self.populated.add(key)
        self.root.expand_all()

    def action_collapse_all(self) -> None:
        """Fold every episode; the cursor moves up to the fold it was hidden in."""
        for tnode in self.root.children:
            tnode.collapse_all()
