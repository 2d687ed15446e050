"""The model backend interface the explorer talks to.

One interface, several implementations: the in-process llama.cpp backend (the real one) and a
scripted backend for deterministic tests. A backend reports, for every call, how many prompt
tokens it evaluated and how many it reused from its cache, so budget accounting is uniform.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import LeafeError

if TYPE_CHECKING:
    from engine.specs import ModelSpec

Message = dict[str, str]


def common_prefix_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many leading items two token sequences share: what a prefix cache can reuse."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class Completion:
    """One model call: the reply text and what it cost."""

    text: str
    prompt_tokens: int  # length of the whole prompt
    cached_tokens: int  # prompt tokens reused from the KV cache (not evaluated again)
    generated_tokens: int
    seconds: float

    @property
    def evaluated_tokens(self) -> int:
        return self.prompt_tokens - self.cached_tokens


class BackendError(LeafeError, RuntimeError):
    """A model could not be loaded or called; the message is one line meant for the user."""


class ModelBackend(ABC):
    """A chat model the explorer can call, with optional saving of a prompt prefix's KV state."""

    name: str = "backend"
    # Whether several threads may call ``complete`` at once and gain from it (a served model, which
    # batches them); an in-process model decodes one sequence at a time.
    concurrent_calls: bool = False

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelBackend:
        """Open the backend a recorded spec describes (``engine.registry.open_backend`` calls this)."""
        raise NotImplementedError(f"{cls.__name__} cannot be opened from a spec")

    @classmethod
    def takes_concurrent_calls(cls, spec: ModelSpec) -> bool:
        """Whether the model this spec opens gains from several calls at once (``--workers``)."""
        del spec
        return cls.concurrent_calls

    @abstractmethod
    def complete(
        self,
        messages: list[Message],
        *,
        temperature: float,
        max_tokens: int,
        seed: int,
        grammar: str | None = None,
    ) -> Completion:
        """Generate the assistant's next reply to ``messages``."""

    def save_prefix(self, messages: list[Message], *, live: bool = False) -> Any | None:
        """Keep the cached state shared by the current context and ``messages`` for a later call.

        The explorer calls this when it queues a branch, while the model's context still holds the
        history the branch starts from; ``restore_prefix`` brings that state back when the branch
        runs, so the history is not evaluated again. ``live``: the context's own trajectory goes on
        (a periodic reflection), so saving must not disturb it. Backends without a cache return None.
        """
        del messages, live
        return None

    def restore_prefix(self, handle: Any) -> None:
        """Make a state saved by ``save_prefix`` current again (no-op by default)."""
        del handle

    def sharing_note(self) -> str | None:
        """A sentence for people when this model shares the machine's cores with other leafe model
        processes (engine/cores.py); None when it has them to itself or runs elsewhere."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, deliberately not abstract
        """Release the model (no-op by default)."""
