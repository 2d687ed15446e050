"""Backends and environments resolved by name from a recorded spec (as get_model/get_environment).

Both come from entry-point groups, so a package adds its own by naming its class under
``leafe.backends`` or ``leafe.environments``, with no change to the CLI or the TUI. The built-ins
are also known directly so that a source checkout works before it is installed.
"""

from __future__ import annotations

import inspect
from importlib import import_module
from importlib.metadata import entry_points
from typing import Any

from engine.backends.base import ModelBackend
from engine.envs import ENTRY_POINT_GROUP as ENV_GROUP
from engine.envs import load_env
from engine.envs.base import Environment
from engine.errors import LeafeError
from engine.specs import EnvSpec, ModelSpec

BACKEND_GROUP = "leafe.backends"
_BUILTIN_BACKENDS = {
    "llama.cpp": "engine.backends.llama:LlamaCppBackend",
    "openai": "engine.backends.served:ServedBackend",
    "scripted": "engine.backends.scripted:ScriptedBackend",
}


class UnknownBackend(LeafeError):
    """A backend name no installed package provides."""


def _backend_targets() -> dict[str, str]:
    targets = dict(_BUILTIN_BACKENDS)
    for entry in entry_points(group=BACKEND_GROUP):
        targets[entry.name] = entry.value
    return targets


def backend_names() -> list[str]:
    return sorted(_backend_targets())


def backend_class(name: str) -> type[ModelBackend]:
    targets = _backend_targets()
    if name not in targets:
        raise UnknownBackend(f"unknown backend {name!r}; known: {', '.join(sorted(targets))}")
    module_name, _, attr = targets[name].partition(":")
    cls: Any = getattr(import_module(module_name), attr)
    return cls


def open_backend(spec: ModelSpec) -> ModelBackend:
    """The model the spec describes, loaded (with its adapter, when it has one)."""
    return backend_class(spec.backend).from_spec(spec)


def open_env(spec: EnvSpec) -> Environment:
    """The environment the spec describes, with its options (those its class accepts)."""
    env = load_env(spec.name)  # checks the name, gives the class
    cls = type(env)
    accepted = inspect.signature(cls).parameters
    options = dict(spec.options)
    if spec.tasks_file is not None:
        options["tasks_file"] = spec.tasks_file
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise LeafeError(f"environment {spec.name} takes no option {', '.join(unknown)}")
    return cls(**options) if options else env


def shared_envs(specs: dict[str, EnvSpec | None]) -> dict[str, Environment]:
    """An environment per task, one object for tasks of the same spec (a suite of ScienceWorld tasks
    then runs on one JVM rather than one per task; each task resets it). Tasks without a spec get
    none."""
    opened: dict[str, Environment] = {}
    out = {}
    for task, spec in specs.items():
        if spec is None:
            continue
        key = spec.to_json()
        if key not in opened:
            opened[key] = open_env(spec)
        out[task] = opened[key]
    return out


__all__ = [
    "BACKEND_GROUP",
    "ENV_GROUP",
    "backend_class",
    "backend_names",
    "open_backend",
    "open_env",
    "shared_envs",
]
