"""Test doubles shared by the tests: a tiny deterministic environment and scripted policies.

They exist for tests only; every user-facing path runs real environments and the real engine.
"""

from __future__ import annotations

from engine.backends.scripted import ScriptedBackend
from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound
from engine.explorer import ExploreConfig, Explorer
from engine.store import Branch, Store

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


# --- Stage 2: a run whose rollback branch recovers (datasets, training) -----------------------

SUMMARY = "at step 2 write the letter b"


def help_for(env: str) -> str:
    assert env == "path"
    return PathTestEnv.action_help


def policy(word: str = "abc", wrong: str = "x", rollback_to: int = 2, note: str = ""):
    """Right letters, except ``wrong`` at step 2 unless guided; a failure reflection rolls back.

    ``note`` is added to every thought, so runs with different notes give different replies.
    """

    def reply(messages: list[dict[str, str]]) -> str:
        if is_reflection(messages):
            return reflect(rollback_to, SUMMARY)
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        if step == 2 and not guided(messages):
            return act(wrong)
        return act(word[step - 1], thought=f"letter {step}{note}")

    return reply


def explore_recovery(
    store: Store, reply=None, model: str = "scripted", **config
) -> tuple[int, ScriptedBackend]:
    """A run of ``path/abc``: the root fails at step 2, its reflection's branch recovers and succeeds.

    ``model`` is only the name recorded with the run (datasets take their tokenizer from it).
    """
    backend = ScriptedBackend(reply_fn=reply or policy())
    config.setdefault("budget", 2)
    run_id = Explorer(store, backend, PathTestEnv(), ExploreConfig(**config)).start("path/abc", model)
    return run_id, backend


def rollback_branch(store: Store, run_id: int) -> Branch:
    return next(b for b in store.branches(run_id) if b.kind == "rollback")
