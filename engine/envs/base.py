"""The environment protocol every leafe environment implements.

Close to Gymnasium so users recognise it: ``reset(task_id, seed) -> observation`` and
``step(action) -> StepResult``. The explorer rolls an environment back by resetting it and
replaying an action prefix, so every environment must be deterministic given
(task id, seed, actions).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine.errors import LeafeError

# A memory address as Python prints it in a repr (``<generator object f at 0x7f3a…>``): it differs
# in every process, so feedback drops it and replays compare observations without it.
_REPR_ADDRESS = re.compile(r"\bat 0x[0-9a-fA-F]{4,16}>")


def without_addresses(text: str) -> str:
    """``text`` with the memory addresses of printed reprs replaced by ``0x…``."""
    return _REPR_ADDRESS.sub("at 0x…>", text)


@dataclass(frozen=True)
class Task:
    """One problem instance of an environment, addressed as ``ENV/NAME`` (e.g. ``sokoban/fixed-1``)."""

    id: str
    env: str
    title: str
    description: str = ""


@dataclass(frozen=True)
class ParsedAction:
    """The outcome of parsing one model reply.

    ``action`` is the text inside the action tags (None when the reply did not parse) and ``error``
    says why it did not parse. Environments turn a reply with an error into an invalid step.
    """

    action: str | None
    thought: str = ""
    error: str | None = None


@dataclass(frozen=True)
class StepResult:
    """What one environment step returns.

    ``observation`` is exactly what the model is shown next (it contains the feedback);
    ``feedback`` is the diagnostic part on its own, for the store and the UI.
    """

    observation: str
    reward: float
    done: bool
    success: bool
    valid: bool
    feedback: str
    info: dict[str, Any] = field(default_factory=dict)


class TaskNotFound(LeafeError, KeyError):
    """Raised with a one-line message when a task id does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; a user should read plain text
        return str(self.args[0]) if self.args else "task not found"


class Environment(ABC):
    """Base class of an interactive, deterministic, text-based environment.

    Subclasses set ``name`` (the task id prefix), ``max_steps`` (steps per episode) and
    ``action_help`` (one paragraph telling the model what a legal action looks like);
    ``free_text_action`` says an action spans lines (a program), not one command.
    """

    name: ClassVar[str]
    max_steps: ClassVar[int]
    action_help: ClassVar[str]
    free_text_action: ClassVar[bool] = False

    @abstractmethod
    def tasks(self) -> list[Task]:
        """Every task this environment offers, in a stable order."""

    @abstractmethod
    def reset(self, task_id: str, seed: int = 0) -> str:
        """Start an episode of ``task_id`` and return the first observation.

        Raises TaskNotFound for an unknown id.
        """

    @abstractmethod
    def step(self, action: ParsedAction) -> StepResult:
        """Apply one (possibly invalid) action. An invalid action still counts as a step."""

    def action_grammar(self) -> str | None:
        """GBNF rule body for the text inside ``<action>…</action>``, or None for free text.

        The grammar is optional; the explorer uses it only when the user asks for
        grammar-constrained output.
        """
        return None

    def example_actions(self, task_id: str) -> list[str]:
        """A few well-formed actions for ``task_id`` (they need not be good ones), which the
        conformance test (``leafe env check``) replays; none by default."""
        del task_id
        return []

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release what the environment runs on (a JVM, a browser); no-op by default."""

    def snapshot(self) -> Any | None:
        """The episode's state now, for ``restore`` to bring back, or None when the environment cannot
        do better than a reset and a replay (the default). The explorer keeps a few, so a branch
        starts from its rollback point without replaying the steps before it."""
        return None

    def restore(self, snapshot: Any) -> None:
        """Make a state from ``snapshot`` current again (only called with what it returned)."""
        raise NotImplementedError(f"{type(self).__name__} takes no snapshots")

    def task(self, task_id: str) -> Task:
        """Look up one task by id."""
        for task in self.tasks():
            if task.id == task_id:
                return task
        raise TaskNotFound(f"unknown task {task_id!r}: `leafe tasks list --env {self.name}` lists them")
