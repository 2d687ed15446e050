"""A test double environment: spell a word letter by letter (task ``path/<word>``).

It exists so that the explorer, the store, the CLI and the TUI can be driven end to end in fast,
exact tests (with the scripted backend), registered like any environment; it is hidden from task
listings and never stands in for a real environment.
"""

from __future__ import annotations

from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound


class PathTestEnv(Environment):
    """Test double: guess a secret word letter by letter (task ``path/<word>``).

    A correct letter advances; a wrong letter ends the episode as a failure; an unparsable reply
    is an invalid action that changes nothing.
    """

    name = "path"
    hidden = True  # a test double: not listed by `leafe tasks list`
    max_steps = 6
    action_help = "The action is one lowercase letter."

    def __init__(self) -> None:
        self.word = ""
        self.position = 0
        self.steps = 0

    def tasks(self) -> list[Task]:
        return [Task("path/abc", "path", "abc"), Task("path/abcdefg", "path", "abcdefg")]

    def example_actions(self, task_id: str) -> list[str]:
        return ["a", "b"]

    def reset(self, task_id: str, seed: int = 0) -> str:
        word = task_id.split("/", 1)[1] if task_id.startswith("path/") else ""
        if not (word.isascii() and word.isalpha() and word.islower()):
            raise TaskNotFound(f"unknown task {task_id!r}: path/ takes a lowercase word")
        self.word, self.position, self.steps = task_id.split("/", 1)[1], 0, 0
        return f"Spell a word of {len(self.word)} letters. Letters so far: ''"

    def step(self, action: ParsedAction) -> StepResult:
        self.steps += 1
        out_of_steps = self.steps >= self.max_steps
        if action.action is None:
            feedback = f"Invalid action: {action.error}"
            return StepResult(feedback, 0.0, out_of_steps, False, False, feedback)
        if action.action.strip() == self.word[self.position]:
            self.position += 1
            solved = self.position == len(self.word)
            feedback = "Correct." + (" Solved!" if solved else "")
            observation = f"{feedback} Letters so far: {self.word[: self.position]!r}"
            return StepResult(observation, float(solved), solved or out_of_steps, solved, True, feedback)
        feedback = f"Wrong letter {action.action.strip()!r}: the episode is over."
        return StepResult(feedback, 0.0, True, False, True, feedback)
