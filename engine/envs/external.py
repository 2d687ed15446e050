"""What the environments that run outside Python share: finding their runtime (a JVM, a browser) and
its package, and the invalid step a reply without an action makes."""

from __future__ import annotations

import shutil
from importlib import import_module
from typing import Any

from engine.envs.base import ParsedAction, StepResult
from engine.errors import LeafeError


class RuntimeMissing(LeafeError):
    """A world's runtime or package is not installed."""


def require_program(program: str, world: str, apt: str) -> None:
    if shutil.which(program) is None:
        raise RuntimeMissing(
            f"{world} needs `{program}` and there is none on PATH",
            hint=f"apt-get install {apt} (make setup does it where it can)",
        )


def world_class(module: str, name: str, package: str) -> Any:
    """The simulator class of a world's package, imported only when a world starts."""
    try:
        return getattr(import_module(module), name)
    except ImportError:
        raise RuntimeMissing(
            f"the {package} package is not installed", hint="make setup installs it (the worlds extra)"
        ) from None


def no_action(action: ParsedAction, out_of_steps: bool, info: dict[str, Any], ask: str) -> StepResult | None:
    """The invalid step for a reply that did not parse or named no action; None when it did."""
    if action.error is None and (action.action or "").strip():
        return None
    reason = " ".join((action.error or "no action was given").split())
    feedback = f"Invalid action: {reason}. {ask}"
    return StepResult(feedback, 0.0, out_of_steps, False, False, feedback, info)
