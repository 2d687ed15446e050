"""The optional config file: defaults for any CLI option, overridden by flags.

Looked up in ``./leafe.toml``, then ``<user config dir>/leafe/leafe.toml`` (or ``$LEAFE_CONFIG``);
the first one found is used. One table per verb, keys named like the options with underscores:

    [explore]
    budget = 4
    model = "qwen2.5-coder-1.5b"
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import platformdirs

from engine.errors import LeafeError


class ConfigError(LeafeError, ValueError):
    """A config file that cannot be used; the message names the file and the problem."""


def config_path() -> Path | None:
    candidates = [Path(os.environ["LEAFE_CONFIG"])] if os.environ.get("LEAFE_CONFIG") else []
    candidates += [Path("leafe.toml"), Path(platformdirs.user_config_dir("leafe")) / "leafe.toml"]
    return next((p for p in candidates if p.is_file()), None)


# Tables inside a verb's table that are not options: [tui.keys] is the TUI's key map.
SUBTABLES = {"tui": {"keys"}}


def read_config(path: Path | None = None) -> tuple[Path | None, dict[str, Any]]:
    """The config file in use and its parsed contents ({} when there is none)."""
    path = path or config_path()
    if path is None:
        return None, {}
    try:
        return path, tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def load_default_map(known: dict[str, set[str]]) -> dict[str, Any]:
    """Read the config file into Click's ``default_map`` form; ``known`` maps verbs to their options."""
    path, data = read_config()
    default_map: dict[str, Any] = {}
    for verb, values in data.items():
        if verb not in known or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown table [{verb}]; known: {', '.join(sorted(known))}")
        options = {k: v for k, v in values.items() if k not in SUBTABLES.get(verb, set())}
        unknown = set(options) - known[verb]
        if unknown:
            raise ConfigError(f"{path}: [{verb}] has unknown keys {', '.join(sorted(unknown))}")
        default_map[verb] = options
    return default_map
