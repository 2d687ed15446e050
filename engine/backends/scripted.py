"""A scripted, deterministic backend. It exists for tests only and never stands in for a model.

It replays a fixed list of replies, or asks a callable for each reply, so tests of the explorer,
the store and the TUI are exact and fast. Token figures are word counts of the prompt, with a
simulated prefix cache, so accounting code paths are exercised too.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backends.base import BackendError, Completion, Message, ModelBackend, common_prefix_length

if TYPE_CHECKING:
    from engine.specs import ModelSpec

ReplyFn = Callable[[list[Message]], str]


def _words(messages: list[Message]) -> list[str]:
    return [word for m in messages for word in (m["role"] + ": " + m["content"]).split()]


class ScriptedBackend(ModelBackend):
    """Test double: returns scripted replies in order (or from ``reply_fn``), records every prompt."""

    name = "scripted (test double)"
    concurrent_calls = True  # calls are serialised by a lock: tests of --workers use it

    def __init__(self, replies: Iterable[str] = (), reply_fn: ReplyFn | None = None) -> None:
        self._replies = list(replies)
        self._reply_fn = reply_fn
        self.prompts: list[list[Message]] = []
        self._context: list[str] = []
        self._lock = threading.Lock()

    def complete(
        self,
        messages: list[Message],
        *,
        temperature: float,
        max_tokens: int,
        seed: int,
        grammar: str | None = None,
    ) -> Completion:
        del temperature, max_tokens, seed, grammar
        with self._lock:
            return self._complete(messages)

    def _complete(self, messages: list[Message]) -> Completion:
        self.prompts.append([dict(m) for m in messages])
        if self._reply_fn is not None:
            text = self._reply_fn(messages)
        elif self._replies:
            text = self._replies.pop(0)
        else:
            raise BackendError("the scripted backend ran out of replies")
        words = _words(messages)
        cached = common_prefix_length(words, self._context)
        self._context = words + text.split()
        return Completion(text, len(words), cached, len(text.split()), 0.0)

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ScriptedBackend:
        """Replies from ``options["replies"]`` (a list) or from the JSON list in the file ``model``."""
        replies = spec.options.get("replies")
        if replies is None:
            try:
                replies = json.loads(Path(spec.model).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise BackendError(
                    f"the scripted backend needs a JSON list of replies in {spec.model!r} ({exc})"
                ) from None
        if not isinstance(replies, list) or not all(isinstance(r, str) for r in replies):
            raise BackendError("the scripted backend's replies must be a JSON list of strings")
        return cls(replies)

    def save_prefix(self, messages: list[Message], *, live: bool = False) -> Any | None:
        words = _words(messages)
        shared = common_prefix_length(words, self._context)
        return list(self._context[:shared])

    def restore_prefix(self, handle: Any) -> None:
        if handle is not None:
            self._context = list(handle)
