"""Guess a hidden number: an example of an environment that lives in its own package.

Task ``guess/N`` hides a number between 1 and 100 chosen from N; each step the agent names a
number and hears "higher", "lower" or "right". Binary search needs at most 7 guesses, and an
episode has 8 steps. Everything leafe needs is here: task ids under the environment's name, a
deterministic reset and step, invalid actions reported as invalid steps, and success decided by the
environment.
"""

from __future__ import annotations

import random

from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound

TASKS = 20


class GuessEnv(Environment):
    name = "guess"
    max_steps = 8
    action_help = "Reply with one whole number from 1 to 100: your guess of the hidden number."

    def __init__(self) -> None:
        self.target = 0
        self.steps = 0

    def tasks(self) -> list[Task]:
        return [Task(f"guess/{n}", self.name, f"hidden number #{n}") for n in range(TASKS)]

    def reset(self, task_id: str, seed: int = 0) -> str:
        self.task(task_id)  # TaskNotFound for an unknown id
        number = int(task_id.split("/")[1])
        self.target = random.Random(f"{number}:{seed}").randint(1, 100)
        self.steps = 0
        return "I am thinking of a number from 1 to 100. Guess it."

    def step(self, action: ParsedAction) -> StepResult:
        self.steps += 1
        out_of_steps = self.steps >= self.max_steps
        text = (action.action or "").strip()
        if action.error is not None or not text.isdigit() or not 1 <= int(text) <= 100:
            feedback = f"Invalid action: {text[:20]!r} is not a number from 1 to 100."
            return StepResult(feedback, 0.0, out_of_steps, False, False, feedback)
        guess = int(text)
        if guess == self.target:
            return StepResult(f"{guess} is right.", 1.0, True, True, True, "right")
        hint = "higher" if guess < self.target else "lower"
        return StepResult(f"{guess}: the number is {hint}.", 0.0, out_of_steps, False, True, hint)

    def action_grammar(self) -> str:
        return "[1-9] [0-9]{0,2}"

    def example_actions(self, task_id: str) -> list[str]:
        return ["50", "25", "75", "hello", "12"]

    def task(self, task_id: str) -> Task:
        for task in self.tasks():
            if task.id == task_id:
                return task
        raise TaskNotFound(f"unknown task {task_id!r}: guess/0 to guess/{TASKS - 1}")
