"""Plain rollouts and Pass@k: the estimator, rollouts on the test environment, `leafe eval` for real."""

from __future__ import annotations

import json
from math import comb

import pytest
from typer.testing import CliRunner

from engine.backends.scripted import ScriptedBackend
from engine.models import TEST_MODEL, cached_path
from engine.rollout import RolloutConfig, pass_at_k, rollout
from leafe_tui.cli import app
from tests.doubles import PathTestEnv, act, guided


@pytest.mark.parametrize(
    ("n", "c", "k"), [(10, 3, 1), (10, 3, 5), (8, 0, 4), (8, 8, 1), (128, 5, 64), (5, 4, 2)]
)
def test_pass_at_k_matches_the_combinatorial_definition(n: int, c: int, k: int) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k))


def test_pass_at_k_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError, match="pass@k"):
        pass_at_k(4, 1, 5)


def test_max_steps_ends_an_episode_as_a_failure() -> None:
    backend = ScriptedBackend(
        reply_fn=lambda messages: act("abc"[sum(m["role"] == "assistant" for m in messages)])
    )
    config = RolloutConfig(grammar=False, max_steps=2)
    cut = [rollout(backend, PathTestEnv(), "path/abc", sample, config) for sample in range(2)]
    assert not any(r.success for r in cut) and [r.steps for r in cut] == [2, 2] and len(backend.prompts) == 4
    assert rollout(backend, PathTestEnv(), "path/abc", 0, RolloutConfig(grammar=False)).success


def test_rollouts_have_no_reflection_and_count_successes() -> None:
    episodes = []

    def reply(messages: list[dict[str, str]]) -> str:
        assert not guided(messages) and "<rollback>" not in messages[-1]["content"]
        step = sum(m["role"] == "assistant" for m in messages) + 1
        if step == 1:
            episodes.append(len(episodes))
        wrong = len(episodes) % 2 == 0  # every second episode fails at step 2
        return act("x" if step == 2 and wrong else "abc"[step - 1])

    backend = ScriptedBackend(reply_fn=reply)
    results = [rollout(backend, PathTestEnv(), "path/abc", i, RolloutConfig(grammar=False)) for i in range(4)]
    successes = sum(r.success for r in results)
    assert successes == 2 and len(episodes) == 4
    assert pass_at_k(4, successes, 2) == pytest.approx(1 - comb(2, 2) / comb(4, 2))
    solved = next(r for r in results if r.success)
    assert len(solved.trajectory) == 3 and "Solved!" in solved.trajectory[-1][1]  # the trajectory is kept


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["sokoban/fixed-1", "--k", "0"], "--k values"),
        (["sokoban/fixed-1", "--k", "one"], "comma-separated"),
        (["sokoban/fixed-1", "--adapter", "/nonexistent/a.gguf"], "no adapter file"),
        (["nosuch/task"], "unknown environment"),
    ],
)
def test_eval_mistakes_are_one_line_errors(args: list[str], expected: str) -> None:
    result = CliRunner().invoke(app, ["eval", *args])
    assert result.exit_code == 2 and expected in result.output
    assert "Traceback" not in result.output


@pytest.mark.real_model
def test_eval_runs_the_real_engine_and_reports_pass_at_k() -> None:
    if cached_path(TEST_MODEL) is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    args = ["eval", "sokoban/fixed-1", "--model", TEST_MODEL, "-n", "2", "--k", "1,2", "--json"]
    args += ["--max-tokens", "48", "--max-steps", "3", "--n-ctx", "4096"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    (row,) = data["tasks"]
    assert row["n"] == 2 and row["successes"] == 0 and row["generated_tokens"] > 0  # fixed-1 needs > 3 moves
    assert row["pass_at"]["1"] == pytest.approx(row["successes"] / 2)
