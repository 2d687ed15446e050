"""What every part of the store shares: timestamps and the user-facing error (no imports of its own,
so the Stage-1 and Stage-2 parts of the store can both use it)."""

from __future__ import annotations

from datetime import UTC, datetime

from engine.errors import LeafeError


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class StoreError(LeafeError, RuntimeError):
    """A database problem a user can act on (wrong path, unknown run); one-line message."""
