"""What a run, an evaluation or a job ran with, recorded so that it can be rebuilt without flags.

A ``ModelSpec`` names the backend (by registry name), the model, the adapter and the backend's
options; an ``EnvSpec`` names the environment and its options. Both are stored as JSON with the
run; ``--resume``, a re-branch in the TUI, a dataset build and an evaluation reopen the model and
the environment from them (``engine.registry``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from engine.errors import LeafeError


class SpecError(LeafeError):
    """A stored or given spec that cannot be read."""


@dataclass(frozen=True)
class ModelSpec:
    """Which model answers, and how it is run."""

    backend: str = field(default="llama.cpp", metadata={"help": "backend name (see `leafe doctor`)"})
    model: str = field(default="", metadata={"help": "known model name or GGUF path (llama.cpp)"})
    adapter: str | None = field(default=None, metadata={"help": "GGUF LoRA file applied to the model"})
    adapter_id: int | None = field(default=None, metadata={"help": "the adapter's id in the store"})
    n_ctx: int = field(default=8192, metadata={"help": "context length in tokens"})
    cache: bool = field(default=True, metadata={"help": "reuse the KV prefix across steps and branches"})
    base_url: str | None = field(default=None, metadata={"help": "server URL (served backends)"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "backend-specific options"})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ModelSpec | None:
        return _load(cls, text)


@dataclass(frozen=True)
class EnvSpec:
    """Which environment a task belongs to, and its options (e.g. a tasks file)."""

    name: str
    tasks_file: str | None = field(default=None, metadata={"help": "JSONL file of the user's own tasks"})
    options: dict[str, Any] = field(default_factory=dict, metadata={"help": "environment-specific options"})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> EnvSpec | None:
        return _load(cls, text)


def _load(cls: type, text: str | None) -> Any:
    """A spec from its JSON; unknown keys (a newer leafe's) are ignored, missing ones take defaults."""
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise SpecError(f"a stored {cls.__name__} is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SpecError(f"a stored {cls.__name__} is not an object")
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in known})
    except TypeError as exc:
        raise SpecError(f"a stored {cls.__name__} lacks a field ({exc})") from None
