"""How statuses and numbers look everywhere in the CLI and the TUI (one map, one empty marker)."""

from __future__ import annotations

# Runs (finished, running, failed, interrupted, stopped) and training jobs (queued, running, done,
# failed, cancelled, interrupted). Cancelled and interrupted read alike: both can be resumed.
STATUS_STYLE = {
    "finished": "green",
    "done": "green",
    "queued": "cyan",
    "running": "bold yellow",
    "failed": "red",
    "cancelled": "magenta",
    "interrupted": "magenta",
    "stopped": "magenta",
}
EMPTY = "—"  # a figure that is not known (yet)


def status_style(status: str) -> str:
    return STATUS_STYLE.get(status, "yellow")


def num(value: float | None, digits: int = 3) -> str:
    return EMPTY if value is None else f"{value:.{digits}f}"


def pct(value: float | None) -> str:
    return EMPTY if value is None else f"{100 * value:.1f}%"
