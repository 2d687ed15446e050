"""The environment conformance test: every built-in environment passes it, and environments broken
in each way it looks for fail the right check with a sentence that says what is wrong."""

from __future__ import annotations

import itertools
import json
import shutil

import pytest
from typer.testing import CliRunner

from engine.env_check import check_environment
from engine.envs import env_names, load_env
from engine.envs.base import ParsedAction, StepResult, TaskNotFound
from engine.envs.path_test import PathTestEnv
from leafe_tui.cli import app

# What the worlds run on beyond Python; `make` installs it where it can.
NEEDS = {"scienceworld": "java", "textworld-express": "java", "miniwob": "chromedriver"}


@pytest.mark.parametrize("name", env_names(hidden=True))
def test_every_built_in_environment_passes(name: str) -> None:
    if name in NEEDS and shutil.which(NEEDS[name]) is None:
        pytest.skip(f"{name} needs {NEEDS[name]} (make setup installs it)")
    if name in NEEDS:
        pytest.importorskip(
            {"miniwob": "miniwob", "scienceworld": "scienceworld"}.get(name, "textworld_express")
        )
    checks = check_environment(lambda: load_env(name))
    assert [c for c in checks if not c.passed] == []
    assert len(checks) == 8


_COUNTER = itertools.count()


class NoisyReset(PathTestEnv):
    """Test double: each reset's text differs."""

    def reset(self, task_id: str, seed: int = 0) -> str:
        return super().reset(task_id, seed) + f" ({next(_COUNTER)})"


class RaisesOnNonsense(PathTestEnv):
    """Test double: a malformed action raises instead of being an invalid step."""

    def step(self, action: ParsedAction) -> StepResult:
        if action.action is None:
            raise ValueError("cannot parse")
        return super().step(action)


class NeverEnds(PathTestEnv):
    """Test double: invalid actions never end the episode, and any word is a task."""

    max_steps = 3

    def reset(self, task_id: str, seed: int = 0) -> str:
        self.word, self.position, self.steps = "abc", 0, 0
        return "Spell a word."

    def step(self, action: ParsedAction) -> StepResult:
        return StepResult("Invalid.", 0.0, False, False, False, "Invalid.")


class DriftingReplay(PathTestEnv):
    """Test double: the second step's observation depends on how many episodes came before."""

    episodes = 0

    def reset(self, task_id: str, seed: int = 0) -> str:
        DriftingReplay.episodes += 1
        return super().reset(task_id, seed)

    def step(self, action: ParsedAction) -> StepResult:
        result = super().step(action)
        if self.steps == 2:
            return StepResult(result.observation + f" #{self.episodes}", *tuple(result.__dict__.values())[1:])
        return result


class UnknownTaskRaisesKeyError(PathTestEnv):
    def reset(self, task_id: str, seed: int = 0) -> str:
        if "no-such" in task_id:
            raise KeyError(task_id)
        return super().reset(task_id, seed)


@pytest.mark.parametrize(
    ("env", "check", "words"),
    [
        (NoisyReset, "resets deterministically", "two resets of path/abc with seed 0 gave different"),
        (RaisesOnNonsense, "reports invalid actions", "a reply that did not parse raised ValueError"),
        (NeverEnds, "ends episodes within max_steps", "3 steps of path/abc (max_steps) did not end"),
        (NeverEnds, "refuses unknown tasks", "accepted an unknown task id"),
        (DriftingReplay, "replays reproduce observations", "another observation at step 2"),
        (UnknownTaskRaisesKeyError, "refuses unknown tasks", "raised KeyError"),
    ],
)
def test_a_broken_environment_fails_the_right_check_in_plain_words(env, check: str, words: str) -> None:
    results = {c.name: c for c in check_environment(env)}
    assert not results[check].passed and words in results[check].detail
    assert results["lists its tasks"].passed  # one broken part does not fail the rest


def test_env_check_command(tmp_path) -> None:
    result = CliRunner().invoke(app, ["env", "check", "sokoban", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] and {c["name"] for c in data["checks"]} >= {"resets deterministically"}
    unknown = CliRunner().invoke(app, ["env", "check", "nowhere"])
    assert unknown.exit_code == 2 and "unknown environment 'nowhere'" in unknown.output


def test_path_double_refuses_words_it_cannot_spell() -> None:
    with pytest.raises(TaskNotFound):
        PathTestEnv().reset("path/not-a-word")


def test_env_check_command_fails_a_broken_environment(monkeypatch) -> None:
    import engine.envs

    monkeypatch.setitem(engine.envs._BUILTIN, "noisy", "tests.test_env_check:NoisyReset")
    result = CliRunner().invoke(app, ["env", "check", "noisy"])
    assert result.exit_code == 1
    assert (
        "✗ resets deterministically: two resets" in result.stdout
        and "noisy fails 1 check(s)" in result.stdout
    )


class ForgetfulSnapshots(PathTestEnv):
    """Test double: takes snapshots, but restore() forgets the letters spelled so far."""

    def snapshot(self):
        return (self.word, self.position, self.steps)

    def restore(self, snapshot) -> None:
        self.word, _, self.steps = snapshot
        self.position = 0


def test_a_restore_that_loses_state_fails_its_check() -> None:
    results = {c.name: c for c in check_environment(ForgetfulSnapshots)}
    check = results["restores its snapshots (if it takes any)"]
    assert not check.passed and "after restore()" in check.detail


class LeakyReset(PathTestEnv):
    """Test double: a reset shows the last letter of the previous episode (state that outlives it)."""

    last = ""

    def reset(self, task_id: str, seed: int = 0) -> str:
        return super().reset(task_id, seed) + (f" (last: {self.last})" if self.last else "")

    def step(self, action):
        self.last = action.action or ""
        return super().step(action)


def test_state_left_over_from_an_episode_fails_the_reset_check() -> None:
    check = {c.name: c for c in check_environment(LeakyReset)}["resets deterministically"]
    assert not check.passed and "after an episode" in check.detail
