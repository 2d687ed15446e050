"""Judging one submitted program against a CodeProblem, with feedback a model can act on.

A submission goes through three stages and stops at the first that fails:

1. syntax: compiled here (never run) so that a syntax error is reported with its line;
2. visible: the problem's examples run in the sandbox; the first failing one is described in full
   (input, expected and actual output, or the traceback tail, or the limit it hit);
3. hidden: the hidden tests run in the sandbox; only how many failed and how (wrong answer, time
   limit, ...) is reported, never their content.

Every stdin/stdout test is its own sandboxed process (tests run a few at a time in threads); after a
hidden test hits the time limit the remaining ones are not started and count as failed, so a slow
program costs one time limit, not one per test. Expected outputs never enter the sandbox: outputs
are compared here. Function problems: the doctest examples are evaluated in the sandbox and their
printed results compared here; check code (``check(candidate)``, HumanEval's hidden tests) runs in a
separate trusted process that receives the function's results as plain data (``function_check``),
so model code never sees the hidden tests and cannot write, forge or sway its own verdict. Nothing a
program prints during the hidden stage reaches the feedback.

Rewards: 1.0 when every hidden test passes; 0.5 × (fraction of hidden tests passed) when the visible
examples pass but some hidden test fails; 0.0 otherwise.
"""

from __future__ import annotations

import ast
import json
import math
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine import sandbox
from engine.envs.code_problem import CodeProblem, IOTest
from engine.envs.code_sources import doctest_examples
from engine.envs.function_check import CheckOutcome, candidate_program, read_records, run_check
from engine.sandbox import Limits, RunResult

MAX_SOURCE_CHARS = 100_000
TRACEBACK_LINES = 8
_CLIP_CHARS = 800
_CLIP_LINES = 25
PARTIAL_CREDIT = 0.5

# Verdicts (Judgement.verdict, and the categories counted for hidden tests).
ACCEPTED = "accepted"
SYNTAX_ERROR = "syntax error"
WRONG_ANSWER = "wrong answer"
RUNTIME_ERROR = "runtime error"
TIME_LIMIT = "time limit exceeded"
MEMORY_LIMIT = "memory limit exceeded"
OUTPUT_LIMIT = "output limit exceeded"
PROCESS_LIMIT = "process limit exceeded"
MISSING_FUNCTION = "missing function"
UNJUDGEABLE = "unjudgeable result"
HIDDEN_FAILED = "failed hidden tests"
NOT_RUN = "not run"


@dataclass(frozen=True)
class Judgement:
    """The outcome of judging one submission; ``feedback`` is what the model is told."""

    stage: str  # "syntax", "visible" or "hidden": the last stage reached
    verdict: str
    feedback: str
    success: bool
    reward: float
    hidden_passed: int = 0
    hidden_total: int = 0
    executions: int = 0  # sandboxed processes started


# ------------------------------------------------------------------------------------------ text helpers


def clip(text: str, max_chars: int = _CLIP_CHARS, max_lines: int = _CLIP_LINES) -> str:
    """Shorten a long text for feedback, saying how much was left out."""
    lines = text.split("\n")
    cut = "\n".join(lines[:max_lines])
    if len(cut) > max_chars:
        cut = cut[:max_chars]
    if cut == text:
        return text
    return f"{cut}\n… ({len(text) - len(cut)} more characters not shown)"


def _block(text: str) -> str:
    """A text as shown inside feedback: clipped, with an explicit marker for nothing at all."""
    if not text.strip():
        return "(nothing)" if not text else "(only whitespace)"
    return clip(text.rstrip("\n"))


def traceback_tail(stderr: str, workdir: str, lines: int = TRACEBACK_LINES) -> str:
    """The last ``lines`` lines of a traceback, with the sandbox's folder removed from paths."""
    text = stderr.replace(workdir.rstrip("/") + "/", "").rstrip()
    kept = text.split("\n")[-lines:]
    return clip("\n".join(kept), max_chars=1500, max_lines=lines)


def stderr_section(stderr: str, workdir: str) -> str:
    """The end of a program's stderr for feedback, labelled unless it is a whole traceback."""
    tail = traceback_tail(stderr, workdir)
    if tail.startswith("Traceback (most recent call last):"):
        return tail
    label = "Traceback (last lines):" if "Traceback" in stderr else "Standard error (last lines):"
    return f"{label}\n{tail}"


def extract_program(text: str) -> str:
    """The program in an action: the inside of a Markdown code fence if the action has exactly one."""
    stripped = text.strip("\n")
    lines = stripped.split("\n")
    fences = [i for i, line in enumerate(lines) if line.strip().startswith("```")]
    if len(fences) == 2:
        return "\n".join(lines[fences[0] + 1 : fences[1]])
    if len(fences) == 1 and fences[0] == 0:  # an opening fence the reply never closed
        return "\n".join(lines[1:])
    return stripped


def syntax_feedback(source: str) -> str | None:
    """Feedback for a program that does not compile, or None when it does (nothing is run)."""
    try:
        compile(source, "solution.py", "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f" on line {exc.lineno}" if exc.lineno else ""
        parts = [f"Syntax error{where}: {exc.msg}."]
        if exc.text and exc.lineno:
            line = exc.text.rstrip("\n")
            parts.append(f"Line {exc.lineno}: {line.strip()}")
            if exc.offset and 0 < exc.offset <= len(line) + 1:
                stripped = len(line) - len(line.lstrip())
                parts.append(" " * (len(f"Line {exc.lineno}: ") + max(0, exc.offset - 1 - stripped)) + "^")
        return "\n".join(parts)
    except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
        return f"Syntax error: the program cannot be compiled ({type(exc).__name__}: {exc})."
    return None


def _limit_text(limits: Limits) -> str:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    return f"{cpu} s of CPU time, {limits.wall_seconds:g} s wall-clock"


def _run_failure(result: RunResult, limits: Limits) -> tuple[str, str] | None:
    """(verdict, description) when a run hit a limit or crashed, None when it exited normally."""
    reason = result.killed_reason
    if result.timed_out:
        return TIME_LIMIT, f"the program was stopped at the time limit ({_limit_text(limits)})"
    if reason == sandbox.OUTPUT:
        return OUTPUT_LIMIT, f"the program wrote more than {limits.max_output_bytes} bytes of output"
    if reason == sandbox.MEMORY:
        return MEMORY_LIMIT, f"the program ran out of memory (limit {limits.memory_mb} MB)"
    if reason == sandbox.PROCESSES:
        return PROCESS_LIMIT, (
            f"the program could not start a process or thread (limit {limits.max_processes})"
        )
    if reason == sandbox.FILE_SIZE:
        return RUNTIME_ERROR, f"the program wrote a file larger than {limits.max_file_bytes} bytes"
    if reason is not None and reason.startswith("signal"):
        return RUNTIME_ERROR, f"the program was killed by {reason}"
    if result.returncode != 0:
        if "Traceback (most recent call last)" in result.stderr:
            return RUNTIME_ERROR, "the program raised an exception"
        return RUNTIME_ERROR, f"the program exited with status {result.returncode}"
    return None


def _outputs_match(expected: str, got: str) -> bool:
    from engine.envs.suite_loader import outputs_match

    return outputs_match(expected, got)


# ------------------------------------------------------------------------------------------ the judge


class Judge:
    """Runs submissions in the sandbox under fixed limits (the same limits for every test)."""

    def __init__(self, limits: Limits, workers: int | None = None) -> None:
        self.limits = limits
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))

    def judge(self, problem: CodeProblem, source: str) -> Judgement:
        if len(source) > MAX_SOURCE_CHARS:
            feedback = f"The program is too long ({len(source)} characters; at most {MAX_SOURCE_CHARS})."
            return Judgement("syntax", SYNTAX_ERROR, feedback, False, 0.0)
        error = syntax_feedback(source)
        if error is not None:
            return Judgement("syntax", SYNTAX_ERROR, error, False, 0.0)
        if problem.kind == "function":
            return self._judge_function(problem, source)
        return self._judge_stdio(problem, source)

    # ---------------------------------------------------------------- stdin/stdout

    def _judge_stdio(self, problem: CodeProblem, source: str) -> Judgement:
        runs = 0
        if problem.examples:
            results = self._run_tests(source, problem.examples, stop_on_timeout=False)
            runs += len(results)
            for index, (test, result) in enumerate(zip(problem.examples, results, strict=True), start=1):
                verdict = self._stdio_verdict(test, result)
                if verdict != ACCEPTED:
                    feedback = self._describe_stdio(index, test, result, verdict)
                    return Judgement("visible", verdict, feedback, False, 0.0, executions=runs)
        results = self._run_tests(source, problem.tests, stop_on_timeout=True)
        runs += sum(result is not None for result in results)
        verdicts = [
            NOT_RUN if r is None else self._stdio_verdict(t, r)
            for t, r in zip(problem.tests, results, strict=True)
        ]
        return self._hidden_judgement(verdicts, runs, bool(problem.examples))

    def _run_tests(
        self, source: str, tests: tuple[IOTest, ...], stop_on_timeout: bool
    ) -> list[RunResult | None]:
        stop = threading.Event()

        def run(test: IOTest) -> RunResult | None:
            if stop.is_set():
                return None
            result = sandbox.run_python(source, test.input, limits=self.limits, filename="solution.py")
            if stop_on_timeout and result.timed_out:
                stop.set()
            return result

        if len(tests) == 1 or self.workers == 1:
            return [run(test) for test in tests]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(tests))) as pool:
            return list(pool.map(run, tests))

    def _stdio_verdict(self, test: IOTest, result: RunResult) -> str:
        failure = _run_failure(result, self.limits)
        if failure is not None:
            return failure[0]
        return ACCEPTED if _outputs_match(test.output, result.stdout) else WRONG_ANSWER

    def _describe_stdio(self, index: int, test: IOTest, result: RunResult, verdict: str) -> str:
        where = f"example {index}"
        if verdict == WRONG_ANSWER:
            parts = [
                f"Wrong answer on {where}.",
                "Input:",
                _block(test.input),
                "Expected output:",
                _block(test.output),
                "Your output:",
                _block(result.stdout),
            ]
            if not result.stdout.strip():
                parts.append(
                    "Your program printed nothing: it must read the input from standard input and print "
                    "the answer (defining a function is not enough; call it)."
                )
            if result.stderr.strip():
                parts.append(stderr_section(result.stderr, result.workdir))
            return "\n".join(parts)
        failure = _run_failure(result, self.limits)
        assert failure is not None
        name = verdict[0].upper() + verdict[1:]
        parts = [f"{name} on {where}: {failure[1]}.", "Input:", _block(test.input)]
        if verdict == OUTPUT_LIMIT:
            parts += ["Start of your output:", clip(result.stdout, max_chars=300, max_lines=5)]
        elif verdict != TIME_LIMIT and result.stderr.strip():
            parts.append(stderr_section(result.stderr, result.workdir))
        return "\n".join(parts)

    def _hidden_judgement(self, verdicts: list[str], runs: int, had_visible: bool) -> Judgement:
        """Stdin/stdout hidden tests: how many failed and how, never which."""
        total = len(verdicts)
        passed = sum(v == ACCEPTED for v in verdicts)
        visible = "the visible examples and " if had_visible else ""
        if passed == total:
            feedback = f"Accepted: the program passed {visible}all {total} hidden tests."
            return Judgement("hidden", ACCEPTED, feedback, True, 1.0, passed, total, runs)
        counts = Counter(v for v in verdicts if v != ACCEPTED)
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
        lead = "passed the visible examples but failed" if had_visible else "failed"
        feedback = (
            f"The program {lead} {total - passed} of {total} hidden tests ({kinds}). The hidden tests "
            "are not shown; think about edge cases, large inputs and efficiency."
        )
        if counts.get(NOT_RUN):
            feedback += " Tests are not started after one hits the time limit."
        reward = PARTIAL_CREDIT * passed / total
        return Judgement("hidden", HIDDEN_FAILED, feedback, False, reward, passed, total, runs)

    @staticmethod
    def _hidden_function_judgement(verdict: str, runs: int, had_visible: bool) -> Judgement:
        """A function's hidden check is one unit (HumanEval's check()): it passes or fails as a whole."""
        visible = "the visible examples and " if had_visible else ""
        if verdict == ACCEPTED:
            feedback = f"Accepted: the function passed {visible}the hidden tests."
            return Judgement("hidden", ACCEPTED, feedback, True, 1.0, 1, 1, runs)
        how = {
            WRONG_ANSWER: "a result was wrong",
            RUNTIME_ERROR: "a call raised an exception",
            TIME_LIMIT: "the time limit was exceeded",
            MEMORY_LIMIT: "the memory limit was exceeded",
            OUTPUT_LIMIT: "the output limit was exceeded",
            PROCESS_LIMIT: "the process limit was exceeded",
            UNJUDGEABLE: "a result was not a plain Python value, which is all the judge compares",
        }.get(verdict, verdict)
        lead = "passed the visible examples but failed" if had_visible else "failed"
        feedback = (
            f"The function {lead} the hidden tests ({how}). The hidden tests are not shown; think "
            "about edge cases (empty inputs, negative numbers, ties) and the exact wording of the task."
        )
        return Judgement("hidden", HIDDEN_FAILED, feedback, False, 0.0, 0, 1, runs)

    # ---------------------------------------------------------------- functions

    def _judge_function(self, problem: CodeProblem, source: str) -> Judgement:
        entry = problem.entry_point or ""
        examples = doctest_examples(problem.visible_check) if ">>>" in problem.visible_check else []
        runs = 0
        failure: tuple[str, str] | None
        if examples or not problem.visible_check.strip():
            # Without visible tests this run only loads the code, so that a load error can be shown
            # from a process that had no hidden data within reach.
            result, records = self._run_doctests(problem, source, [src for src, _ in examples])
            runs += 1
            failure = self._visible_function_failure(entry, examples, result, records)
        else:
            spec = _check_spec(problem.visible_check, "visible_check.py")
            outcome = self._run_check(problem, source, spec)
            runs += outcome.runs
            failure = self._visible_check_failure(entry, outcome)
        if failure is not None:
            verdict, feedback = failure
            return Judgement("visible", verdict, feedback, False, 0.0, executions=runs)
        outcome = self._run_check(problem, source, _check_spec(problem.hidden_check, "hidden_check.py"))
        runs += outcome.runs
        return self._hidden_function_judgement(self._hidden_verdict(outcome), runs, bool(examples))

    def _run_doctests(
        self, problem: CodeProblem, source: str, calls: list[str]
    ) -> tuple[RunResult, list[dict[str, Any]]]:
        result = sandbox.run_python(
            candidate_program(problem.entry_point or ""),
            json.dumps({"mode": "doctest", "calls": calls}),
            limits=self.limits,
            extra_files={"solution.py": source, "prompt.py": problem.prompt},
            filename="leafe_harness.py",
        )
        return result, read_records(result.stdout)

    def _run_check(self, problem: CodeProblem, source: str, spec: dict[str, Any]) -> CheckOutcome:
        return run_check(
            problem.prompt,
            problem.entry_point or "",
            source,
            spec["code"],
            filename=spec["filename"],
            call_check=spec["call_check"],
            limits=self.limits,
        )

    def _setup_failure(
        self, entry: str, result: RunResult, records: list[dict[str, Any]]
    ) -> tuple[str, str] | None:
        """A failure before any example ran: the code did not load, or lacks the function."""
        events = {r.get("event"): r for r in records}
        if "load_error" in events:
            tail = traceback_tail(str(events["load_error"].get("error", "")), result.workdir)
            return RUNTIME_ERROR, f"Runtime error: your code raised an exception while being loaded.\n{tail}"
        if "missing" in events:
            return MISSING_FUNCTION, (
                f"Your code does not define the function {entry}(). Submit the "
                "complete function, with its def line."
            )
        if "no_spec" in events:
            return RUNTIME_ERROR, (
                "Runtime error: your code read standard input while being loaded; a "
                "function solution must not read input."
            )
        if "loaded" not in events:
            failure = _run_failure(result, self.limits) or (RUNTIME_ERROR, "the program stopped unexpectedly")
            text = f"{failure[0][0].upper()}{failure[0][1:]} while loading your code: {failure[1]}."
            if result.stderr.strip() and failure[0] != TIME_LIMIT:
                text += "\n" + stderr_section(result.stderr, result.workdir)
            return failure[0], text
        return None

    def _visible_function_failure(
        self, entry: str, examples: list[tuple[str, str]], result: RunResult, records: list[dict[str, Any]]
    ) -> tuple[str, str] | None:
        setup = self._setup_failure(entry, result, records)
        if setup is not None:
            return setup
        outcomes = {
            r["i"]: r for r in records if r.get("event") in ("value", "error") and isinstance(r.get("i"), int)
        }
        for index, (call, want) in enumerate(examples):
            shown = f">>> {call.strip()}"
            record = outcomes.get(index)
            if record is None:  # the run stopped during this example
                failure = _run_failure(result, self.limits) or (
                    RUNTIME_ERROR,
                    "the program stopped unexpectedly",
                )
                text = (
                    f"{failure[0][0].upper()}{failure[0][1:]} on example {index + 1}: {failure[1]}.\n{shown}"
                )
                if result.stderr.strip() and failure[0] != TIME_LIMIT:
                    text += "\n" + stderr_section(result.stderr, result.workdir)
                return failure[0], text
            if record["event"] == "error":
                tail = traceback_tail(str(record.get("error", "")), result.workdir)
                return (
                    RUNTIME_ERROR,
                    f"Runtime error on example {index + 1}: the call raised an exception.\n{shown}\n{tail}",
                )
            printed, value = str(record.get("printed") or ""), record.get("repr")
            got = printed if value is None else str(value) + "\n"  # debug prints do not spoil a right value
            if not (doctest_output_matches(want, got) or doctest_output_matches(want, printed + got)):
                extra = f"\nPrinted: {_block(printed)}" if printed and value is not None else ""
                return WRONG_ANSWER, (
                    f"Wrong result on example {index + 1}:\n{shown}\nExpected: {_block(want)}\n"
                    f"Got: {_block(got)}{extra}"
                )
        return None

    def _visible_check_failure(self, entry: str, outcome: CheckOutcome) -> tuple[str, str] | None:
        """Visible check code: its traceback (visible text) and the function's own, when it raised."""
        if outcome.status == "passed":
            return None
        if outcome.status == "setup" and outcome.failure is not None:
            return self._setup_failure(entry, outcome.failure, outcome.setup_records)
        if outcome.status == "failed" and outcome.failure is not None:
            failure = _run_failure(outcome.failure, self.limits) or (RUNTIME_ERROR, "the program stopped")
            return failure[
                0
            ], f"{failure[0][0].upper()}{failure[0][1:]} while checking the visible tests: {failure[1]}."
        if outcome.status == "unjudgeable":
            return UNJUDGEABLE, _unjudgeable_text(outcome.detail)
        if outcome.candidate_traceback:
            tail = traceback_tail(outcome.candidate_traceback, "")
            return RUNTIME_ERROR, f"Runtime error while checking the visible tests.\n{tail}"
        tail = traceback_tail(outcome.check_traceback, "")
        if outcome.error_type == "AssertionError":
            return WRONG_ANSWER, f"Wrong result: a check of the visible tests failed.\n{tail}"
        return RUNTIME_ERROR, f"Runtime error while checking the visible tests.\n{tail}"

    def _hidden_verdict(self, outcome: CheckOutcome) -> str:
        """Only the kind of failure: nothing the program printed or raised reaches the feedback."""
        if outcome.status == "passed":
            return ACCEPTED
        if outcome.status == "error":
            return WRONG_ANSWER if outcome.error_type == "AssertionError" else RUNTIME_ERROR
        if outcome.status == "failed" and outcome.failure is not None:
            failure = _run_failure(outcome.failure, self.limits)
            return failure[0] if failure is not None else RUNTIME_ERROR
        if outcome.status == "unjudgeable" and outcome.detail.startswith("not_plain"):
            return UNJUDGEABLE
        return RUNTIME_ERROR


def _unjudgeable_text(detail: str) -> str:
    if detail.startswith("not_plain"):
        what = detail.partition(": ")[2] or "a value"
        return (
            f"Unjudgeable result: the function returned {what}. Only plain Python values (numbers, "
            "strings, bytes, lists, tuples, dicts, sets, None) can be compared with the expected results."
        )
    return f"The judge could not run the check: {detail}."


def _check_spec(code: str, filename: str) -> dict[str, Any]:
    """The harness spec for check code; ``check(candidate)`` is called unless the code calls it itself."""
    try:
        body = ast.parse(code).body
    except SyntaxError:
        body = []
    calls_itself = any(
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "check"
        for node in body
    )
    return {"mode": "check", "code": code, "filename": filename, "call_check": not calls_itself}


# ------------------------------------------------------------------------------------------ doctest output


def doctest_output_matches(want: str, got: str) -> bool:
    """Whether a doctest example's output ``got`` counts as ``want``.

    Equal text (ignoring trailing whitespace), or both parse as Python literals that are equal
    (floats within 1e-6 relative), so ``[1,2]`` matches ``[1, 2]`` and ``"a"`` matches ``'a'``.
    """
    if _normalized(want) == _normalized(got):
        return True
    ok_want, want_value = _literal(want)
    ok_got, got_value = _literal(got)
    return ok_want and ok_got and _close(want_value, got_value)


def _normalized(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().split("\n"))


def _literal(text: str) -> tuple[bool, Any]:
    if len(text) > 20_000:
        return False, None
    try:
        return True, ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False, None


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        if (
            isinstance(a, bool)
            or isinstance(b, bool)
            or not isinstance(a, int | float)
            or not isinstance(b, int | float)
        ):
            return False
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, list | tuple) and type(a) is type(b):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b
