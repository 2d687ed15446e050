"""The built-in suite of stdin/stdout programming problems (CodeContests style).

Each problem lives in one TOML file under ``engine/envs/code_suite/`` (shipped as package data)
with the keys ``title``, ``difficulty`` ("easy" or "medium"), ``statement``, ``reference`` (a
correct Python 3 solution) and the arrays of tables ``[[examples]]`` (shown to the model) and
``[[tests]]`` (hidden), each entry holding ``input`` and ``output``. The file name without
``.toml`` is the problem's slug; its id is ``suite/<slug>``.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files

from engine.envs.code_problem import CodeProblem
from engine.envs.code_sources import io_tests
from engine.errors import SettingError

SUITE_PREFIX = "suite/"
DIFFICULTIES = ("easy", "medium")


def _normalized_lines(text: str) -> list[str]:
    """Split ``text`` into lines, drop trailing whitespace of each line and trailing blank lines."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def outputs_match(expected: str, got: str) -> bool:
    """Whether a program's output ``got`` counts as equal to ``expected``.

    Both are split into lines; trailing whitespace on each line (``\\r`` included) and trailing
    blank lines are ignored. Everything else (leading blank lines, leading and inner spaces, the
    tokens themselves) must match exactly.
    """
    return _normalized_lines(expected) == _normalized_lines(got)


def parse_problem(slug: str, text: str) -> tuple[CodeProblem, str]:
    """Build the problem ``suite/<slug>`` from the TOML ``text``; returns it and its difficulty.

    Raises ``ValueError`` when a required key is missing or has the wrong type.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingError(f"{slug}: invalid TOML: {exc}") from exc
    for key in ("title", "difficulty", "statement", "reference"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise SettingError(f"{slug}: missing or empty string '{key}'")
    if data["difficulty"] not in DIFFICULTIES:
        raise SettingError(f"{slug}: difficulty must be one of {DIFFICULTIES}, not {data['difficulty']!r}")
    problem = CodeProblem(
        id=SUITE_PREFIX + slug,
        title=data["title"],
        statement=data["statement"].strip("\n"),
        kind="stdio",
        examples=io_tests(data.get("examples", []), "examples", slug),
        tests=io_tests(data.get("tests", []), "tests", slug),
        reference=data["reference"],
    )
    return problem, data["difficulty"]


@cache
def _load_all() -> tuple[tuple[CodeProblem, str], ...]:
    folder = files("engine.envs") / "code_suite"
    entries = sorted(
        (entry for entry in folder.iterdir() if entry.name.endswith(".toml")), key=lambda e: e.name
    )
    return tuple(
        parse_problem(entry.name.removesuffix(".toml"), entry.read_text(encoding="utf-8"))
        for entry in entries
    )


@cache
def load_suite(difficulty: str | None = None) -> tuple[CodeProblem, ...]:
    """All suite problems, sorted by file name (cached); optionally only one ``difficulty``."""
    if difficulty is not None and difficulty not in DIFFICULTIES:
        raise SettingError(f"unknown difficulty {difficulty!r}; expected one of {DIFFICULTIES}")
    return tuple(p for p, level in _load_all() if difficulty is None or level == difficulty)
