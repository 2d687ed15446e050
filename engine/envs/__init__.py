"""Environment discovery.

Environments register under the ``leafe.environments`` entry-point group (name → class), so a user
package can add its own without forking leafe. The built-ins are also known directly so a source
checkout works before it is installed.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from engine.envs.base import Environment, TaskNotFound

ENTRY_POINT_GROUP = "leafe.environments"
_BUILTIN = {
    "code": "engine.envs.code:CodeEnv",
    "sokoban": "engine.envs.sokoban:SokobanEnv",
    "scienceworld": "engine.envs.sciworld:ScienceWorldEnv",
    "textworld-express": "engine.envs.twx:TextWorldExpressEnv",
    "miniwob": "engine.envs.web:MiniWoBEnv",
    "path": "engine.envs.path_test:PathTestEnv",  # a test double, hidden from listings
}


def _targets() -> dict[str, str]:
    targets = dict(_BUILTIN)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        targets[entry.name] = entry.value
    return targets


def env_names(*, hidden: bool = False) -> list[str]:
    """Environment names; test doubles (a class with ``hidden = True``) only when asked for."""
    names = sorted(_targets())
    return names if hidden else [n for n in names if not getattr(_class(n), "hidden", False)]


def _class(name: str) -> Any:
    module_name, _, attr = _targets()[name].partition(":")
    return getattr(import_module(module_name), attr)


def load_env(name: str, *, tasks_file: Path | None = None) -> Environment:
    """Instantiate the environment called ``name``; ``tasks_file`` goes to environments that take one."""
    targets = _targets()
    if name not in targets:
        raise TaskNotFound(f"unknown environment {name!r}; known: {', '.join(sorted(targets))}")
    cls: Any = _class(name)
    if tasks_file is not None and name == "code":
        return cls(tasks_file=tasks_file)
    return cls()


def env_for_task(task_id: str, *, tasks_file: Path | None = None) -> Environment:
    """The environment a task id belongs to (the part before the first ``/``), with the task checked."""
    name, sep, _ = task_id.partition("/")
    if not sep:
        raise TaskNotFound(
            f"task ids look like ENV/NAME (e.g. code/suite/…, sokoban/fixed-1), not {task_id!r}"
        )
    env = load_env(name, tasks_file=tasks_file)
    env.task(task_id)
    return env
