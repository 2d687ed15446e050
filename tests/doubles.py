"""Test doubles shared by the tests: a tiny deterministic environment and scripted policies.

They exist for tests only; every user-facing path runs real environments and the real engine.
"""

from __future__ import annotations

from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound

GUIDANCE_MARK = "Experience from an earlier attempt"


class PathTestEnv(Environment):
    """Test double: guess a secret word letter by letter (task ``path/<word>``).

    A correct letter advances; a wrong letter ends the episode as a failure; an unparsable reply
    is an invalid action that changes nothing.
    """

    name = "path"
    max_steps = 6
    action_help = "The action is one lowercase letter."

    def __init__(self) -> None:
        self.word = ""
        self.position = 0
        self.steps = 0

    def tasks(self) -> list[Task]:
        return [Task("path/abc", "path", "abc"), Task("path/abcdefg", "path", "abcdefg")]

    def reset(self, task_id: str, seed: int = 0) -> str:
        if not task_id.startswith("path/"):
            raise TaskNotFound(f"unknown task {task_id!r}")
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


def act(letter: str, thought: str = "next letter") -> str:
    return f"<think>{thought}</think>\n<action>{letter}</action>"


def reflect(step: int | str, summary: str = "use the right letter") -> str:
    return f"<think>it went wrong</think>\n<rollback>{step}</rollback>\n<summary>{summary}</summary>"


def is_reflection(messages: list[dict[str, str]]) -> bool:
    return "<rollback>" in messages[-1]["content"]


def guided(messages: list[dict[str, str]]) -> bool:
    return any(GUIDANCE_MARK in m["content"] for m in messages if m["role"] == "user")
