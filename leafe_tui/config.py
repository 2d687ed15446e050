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


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the file and the problem."""


def config_path() -> Path | None:
    candidates = [Path(os.environ["LEAFE_CONFIG"])] if os.environ.get("LEAFE_CONFIG") else []
    candidates += [Path("leafe.toml"), Path(platformdirs.user_config_dir("leafe")) / "leafe.toml"]
    return next((p for p in candidates if p.is_file()), None)


def load_default_map(known: dict[str, set[str]]) -> dict[str, Any]:
    """Read the config file into Click's ``default_map`` form; ``known`` maps verbs to their options."""
    path = config_path()
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for verb, values in data.items():
        if verb not in known or not isinstance(values, dict):
            raise ConfigError(f"{path}: unknown table [{verb}]; known: {', '.join(sorted(known))}")
        unknown = set(values) - known[verb]
        if unknown:
            raise ConfigError(f"{path}: [{verb}] has unknown keys {', '.join(sorted(unknown))}")
    return data
