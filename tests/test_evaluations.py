"""Stored evaluations: the estimator, resume without losing or repeating a sample, and compare's interval."""

from __future__ import annotations

import json
import random
from math import comb
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.evaluation import Summary, TaskResult, compare
from engine.rollout import pass_at_k
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import act

runner = CliRunner()


def leafe(*args: str):
    return runner.invoke(app, list(args))


# --- the estimator ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("n", "c", "k"), [(10, 3, 1), (10, 3, 4), (8, 0, 2), (8, 8, 2), (5, 2, 5), (20, 7, 16)]
)
def test_pass_at_k_against_the_closed_form(n: int, c: int, k: int) -> None:
    expected = 1 - comb(n - c, k) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_edges() -> None:
    assert pass_at_k(8, 0, 1) == 0.0 and pass_at_k(8, 0, 8) == 0.0  # c = 0
    assert pass_at_k(8, 8, 1) == 1.0 and pass_at_k(8, 8, 8) == 1.0  # c = n
    assert pass_at_k(4, 1, 4) == 1.0 and pass_at_k(4, 0, 4) == 0.0  # n = k
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the success rate
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


# --- compare on synthetic results whose truth is known ----------------------------------------
def summary(eval_id: int, successes: list[int], n: int = 8) -> Summary:
    tasks = [TaskResult(f"t/{i}", n, c) for i, c in enumerate(successes)]
    return Summary(eval_id, tasks, [1, 4, 8], True)


def test_identical_evaluations_are_inside_the_noise() -> None:
    rng = random.Random(3)
    same = [rng.randint(0, 8) for _ in range(40)]
    result = compare(summary(1, same), summary(2, same))
    for row in result.by_k:
        assert row.difference == 0 and row.low <= 0 <= row.high and not row.real
        assert "inside the noise" in row.sentence("#1", "#2", 0.95)


def test_a_sure_improvement_is_real_and_its_interval_holds_the_truth() -> None:
    """B solves 3 more samples of 8 on every task: the true pass@1 difference is exactly 3/8."""
    rng = random.Random(4)
    base = [rng.randint(0, 5) for _ in range(60)]
    result = compare(summary(1, base), summary(2, [c + 3 for c in base]))
    one = next(r for r in result.by_k if r.k == 1)
    assert one.difference == pytest.approx(3 / 8) and one.low == pytest.approx(3 / 8)
    assert one.real and "#2 is better" in one.sentence("#1", "#2", 0.95)


def test_the_interval_covers_the_true_difference_about_as_often_as_it_says() -> None:
    """Tasks drawn from a population whose mean difference is known: a 90 % interval must cover it in
    roughly 90 % of repeated experiments (here: at least 80 of 100)."""
    truth = _population_difference()  # the mean pass@1 difference over the whole population of tasks
    covered = 0
    for trial in range(100):
        rng = random.Random(trial)
        a = [rng.randint(0, 8) for _ in range(30)]
        b = [min(8, max(0, c + rng.choice([-2, 0, 1, 2, 3]))) for c in a]  # noisy gains per task
        result = compare(summary(1, a), summary(2, b), level=0.9, resamples=500, seed=trial)
        one = next(r for r in result.by_k if r.k == 1)
        covered += one.low <= truth <= one.high
    assert covered >= 80


def _population_difference(draws: int = 200_000) -> float:
    rng = random.Random(12345)
    total = 0.0
    for _ in range(draws):
        c = rng.randint(0, 8)
        total += (min(8, max(0, c + rng.choice([-2, 0, 1, 2, 3]))) - c) / 8
    return total / draws


def test_tasks_solved_by_one_only_are_named() -> None:
    result = compare(summary(1, [0, 3, 0]), summary(2, [2, 0, 0]))
    assert result.only_a == ["t/1"] and result.only_b == ["t/0"]


# --- the commands ----------------------------------------------------------------------------
def test_an_interrupted_evaluation_resumes_without_losing_or_repeating_a_sample(tmp_path: Path) -> None:
    replies = tmp_path / "r.json"
    db = str(tmp_path / "e.db")
    replies.write_text(json.dumps([act("a"), act("b"), act("c"), act("x")]))  # two samples, then nothing
    first = leafe("eval", "path/abc", "--backend", "scripted", "--model", str(replies), "-n", "4",
                  "--k", "1,4", "--db", db)  # fmt: skip
    assert first.exit_code == 1 and "ran out of replies" in first.output and "--resume 1" in first.output
    store = Store(db)
    assert [s.sample for s in store.eval_samples(1)] == [0, 1] and store.evaluation(1)[
        "status"
    ] == "interrupted"
    store.close()

    replies.write_text(json.dumps([act("a"), act("b"), act("c"), act("z")]))  # samples 2 and 3
    resumed = leafe("eval", "--resume", "1", "--db", db, "--json")
    assert resumed.exit_code == 0, resumed.output
    store = Store(db)
    samples = store.eval_samples(1)
    assert [(s.sample, s.success) for s in samples] == [(0, True), (1, False), (2, True), (3, False)]
    assert (
        samples[0].trajectory[0]["reply"] == act("a") and "Correct" in samples[0].trajectory[0]["observation"]
    )
    assert store.evaluation(1)["status"] == "finished"
    store.close()
    (row,) = json.loads(resumed.stdout[resumed.stdout.index("{") :])["tasks"]
    assert (row["n"], row["successes"], row["pass_at"]["1"]) == (4, 2, 0.5)
    again = leafe("eval", "--resume", "1", "--db", db)
    assert again.exit_code == 2 and "already finished" in again.output


def test_evals_list_show_and_compare(tmp_path: Path) -> None:
    db = str(tmp_path / "e.db")
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps([act("a"), act("b"), act("c")] * 2))
    bad.write_text(json.dumps([act("x")] * 2))
    for replies in (bad, good):
        run = leafe("eval", "path/abc", "--backend", "scripted", "--model", str(replies), "-n", "2",
                    "--k", "1,2", "--db", db)  # fmt: skip
        assert run.exit_code == 0, run.output
    listed = json.loads(leafe("evals", "--db", db, "--json").stdout)
    assert [(e["id"], e["mean_pass_at"]["1"]) for e in listed] == [(1, 0.0), (2, 1.0)]
    shown = json.loads(leafe("evals", "show", "2", "--db", db, "--json").stdout)
    assert shown["curve"] == {"1": 1.0, "2": 1.0} and shown["complete"] is True
    compared = json.loads(leafe("compare", "1", "2", "--db", db, "--json").stdout)
    assert compared["only_b"] == ["path/abc"] and compared["by_k"][0]["difference"] == 1.0
    text = leafe("compare", "1", "2", "--db", db).output
    assert "pass@1: #2 vs #1 +100.0 points" in text and "solved only by #2: path/abc" in text
    missing = leafe("compare", "1", "9", "--db", db)
    assert missing.exit_code == 2 and "no evaluation 9" in missing.output


def test_the_pass_at_k_curve_in_the_terminal_and_as_svg(tmp_path: Path) -> None:
    import xml.etree.ElementTree as ET

    db = str(tmp_path / "e.db")
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps([act("a"), act("b"), act("c"), act("x"), act("x"), act("x")]))
    run = leafe("eval", "path/abc", "--backend", "scripted", "--model", str(replies), "-n", "4", "--k", "1,4",
                "--db", db)  # fmt: skip
    assert run.exit_code == 0, run.output
    svg = tmp_path / "plots" / "passk.svg"
    result = leafe("evals", "plot", "1", "--db", db, "--out", str(svg))
    assert result.exit_code == 0, result.output
    assert (
        "@1" in result.output and "@4" in result.output and "25%" in result.output and "100%" in result.output
    )
    root = ET.fromstring(svg.read_text())  # well-formed
    (line,) = [e for e in root.iter() if e.tag.endswith("polyline")]
    assert len(line.get("points").split()) == 4  # k = 1 … 4
