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


class Options:
    """What a command accepts in the config file: its options, and its subcommands' (a group)."""

    def __init__(self, params: dict[str, str], commands: dict[str, Options] | None = None) -> None:
        self.params = params  # key in the file (option name with underscores) -> parameter name
        self.commands = commands or {}


def load_default_map(known: Options) -> dict[str, Any]:
    """Read the config file into Click's ``default_map`` form; ``known`` is the command tree.

    A group's subcommands are nested tables: ``[dataset.build]``, ``[jobs.show]``.
    """
    path, data = read_config()
    return _defaults(path, "", data, known)


def _defaults(path: Path | None, where: str, values: dict[str, Any], node: Options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        if key in node.commands:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{name}] must be a table")
            out[key] = _defaults(path, name, value, node.commands[key])
        elif key in SUBTABLES.get(where, set()):
            continue  # read by its owner (e.g. the TUI's [tui.keys])
        elif key in node.params:
            out[node.params[key]] = value
        elif not where:
            known = ", ".join(sorted(node.commands))
            raise ConfigError(f"{path}: unknown table [{key}]; known: {known}")
        else:
            unknown.append(key)
    if unknown:
        raise ConfigError(f"{path}: [{where}] has unknown keys {', '.join(sorted(unknown))}")
    return out
