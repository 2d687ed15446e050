"""What the explorer tells live views, one small class per kind of thing it committed.

Every event follows a commit to the store, so a view can always read more from the store; the
events carry what a view needs to update itself without that read.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.store import Node


@dataclass(frozen=True)
class RunChanged:
    """The run started, was resumed, or ended (``status``: running, finished, stopped, failed, …)."""

    run_id: int
    status: str
    task_id: str | None = None
    resumed: bool = False


@dataclass(frozen=True)
class BranchChanged:
    """An episode was queued, started, skipped or ended (its row in the store has the rest)."""

    run_id: int
    branch_id: int
    status: str
    outcome: str | None = None
    rollback_step: int | None = None
    summary: str | None = None
    parent_branch_id: int | None = None
    rebranch_of: int | None = None


@dataclass(frozen=True)
class NodeCommitted:
    """A step (or the run's first observation, step 0) was committed."""

    run_id: int
    node: Node


@dataclass(frozen=True)
class ReflectionMade:
    """The model reflected at ``node_id``: a rollback request, no rollback, or an unparsable reply."""

    run_id: int
    reflection_id: int
    node_id: int
    rollback_step: int | None
    summary: str | None
    parse_error: str | None
    note: str | None = None


ExplorerEvent = RunChanged | BranchChanged | NodeCommitted | ReflectionMade
