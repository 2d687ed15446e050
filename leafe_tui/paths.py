"""Where leafe keeps its files by default."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def default_db() -> Path:
    """The database used when --db is not given: $LEAFE_DB, else leafe.db in the user data dir."""
    if env := os.environ.get("LEAFE_DB"):
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("leafe")) / "leafe.db"
