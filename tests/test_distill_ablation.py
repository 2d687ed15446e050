"""The Stage-2 ablation: equal data budgets, the refusals that keep it honest, and one real run
(SmolLM2: two LoRA trainings, GGUF export, three evaluations in llama.cpp) end to end."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from engine.errors import LeafeError
from engine.models import TEST_MODEL, cached_path
from engine.store import Store
from tests.doubles import act, explore_recovery, is_reflection, policy, reflect
from trainer.dataset import DatasetSettings, collect_examples
from trainer.distill_ablation import (
    DistillSettings,
    create_distill_ablation,
    dataset_settings,
    report_distill,
    run_distill_ablation,
)


def recovered_runs(store: Store, count: int, model: str = "scripted", **config) -> tuple[int, ...]:
    """``count`` runs of path/abc whose rollback branch recovers, each with its own wording (so each
    gives one rehearsal and one counterfactual example that no other run duplicates)."""
    return tuple(
        explore_recovery(store, policy(note=f" (run {i})"), model=model, budget=2, **config)[0]
        for i in range(count)
    )


def test_the_data_budget_keeps_both_kinds_in_proportion(store: Store) -> None:
    runs = recovered_runs(store, 3)
    everything, counts = collect_examples(store, DatasetSettings(selection="successful", runs=runs,
                                                                 rehearsal_fraction=1.0))  # fmt: skip
    assert (counts.counterfactual, counts.rehearsal) == (3, 3)
    limited, limited_counts = collect_examples(
        store, DatasetSettings(selection="successful", runs=runs, rehearsal_fraction=1.0, limit=4)
    )
    assert sorted(e.kind for e in limited) == ["cf", "cf", "reh", "reh"]
    assert (limited_counts.counterfactual, limited_counts.rehearsal) == (2, 2)
    assert limited_counts.skipped["over the example limit"] == 2
    one, _ = collect_examples(
        store, DatasetSettings(selection="successful", runs=runs, rehearsal_fraction=1.0, limit=1)
    )
    assert [e.kind for e in one] == ["cf"]  # a counterfactual example is never drawn away entirely
    assert [e for e in everything if e in limited] == limited  # the original order is kept


def test_the_two_arms_differ_only_in_the_counterfactual_examples(store: Store) -> None:
    settings = DistillSettings(runs=recovered_runs(store, 2), held_out=("path/abcdefg",), samples=1, ks=(1,))
    reh, _ = collect_examples(store, dataset_settings(settings, "reh"))
    leafe, _ = collect_examples(store, dataset_settings(settings, "leafe"))
    assert {e.kind for e in reh} == {"reh"} and "cf" in {e.kind for e in leafe}
    budget = min(len(reh), len(leafe))
    reh_b, _ = collect_examples(store, dataset_settings(settings, "reh", budget))
    leafe_b, _ = collect_examples(store, dataset_settings(settings, "leafe", budget))
    assert len(reh_b) == len(leafe_b) == budget == 2
    assert sorted(e.kind for e in leafe_b) == ["cf", "reh"]  # half and half, as the runs gave them


def test_a_held_out_task_that_was_explored_is_refused(store: Store) -> None:
    runs = recovered_runs(store, 1)
    with pytest.raises(LeafeError, match="would leak"):
        create_distill_ablation(store, DistillSettings(runs=runs, held_out=("path/abc",), samples=1, ks=(1,)))
    assert store.ablations() == []


def test_runs_without_a_recovered_branch_are_refused_before_training(store: Store) -> None:
    def never_recovers(messages):
        return reflect(2, "try again") if is_reflection(messages) else act("x")

    run_id, _ = explore_recovery(store, reply=never_recovers, budget=2)
    settings = DistillSettings(runs=(run_id,), held_out=("path/abcdefg",), samples=1, ks=(1,))
    with pytest.raises(LeafeError, match="no counterfactual example"):
        create_distill_ablation(store, settings)
    assert store.ablations() == [] and store.jobs() == []  # refused before anything was recorded


def test_an_unknown_held_out_task_is_refused_before_training(store: Store) -> None:
    settings = DistillSettings(runs=recovered_runs(store, 1), held_out=("path-typo/x",), samples=1, ks=(1,))
    with pytest.raises(LeafeError, match="path-typo"):
        create_distill_ablation(store, settings)
    assert store.ablations() == [] and store.datasets() == []


def test_running_an_explore_ablation_as_a_distill_one_is_refused(store: Store) -> None:
    explore_id = store.create_ablation("explore", settings={}, tasks=["path/abc"])
    with pytest.raises(LeafeError, match="not a distill one"):
        run_distill_ablation(store, explore_id)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (dict(runs=()), "explored runs"),
        (dict(held_out=()), "held-out"),
        (dict(samples=2, ks=(4,)), "k ≤ n"),
        (dict(examples=-1), "example budget"),
    ],
)
def test_bad_distill_settings_are_refused(values, message) -> None:
    base = dict(runs=(1,), held_out=("path/abcdefg",), samples=2, ks=(1,))
    with pytest.raises(LeafeError, match=message):
        DistillSettings(**{**base, **values})


@pytest.mark.real_model
def test_the_distill_ablation_end_to_end_on_smollm2(tmp_path) -> None:
    if cached_path(TEST_MODEL) is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded (`leafe models pull {TEST_MODEL}`)")
    from leafe_tui.cli import app

    store = Store(tmp_path / "d.db")
    runs = recovered_runs(store, 2, model=TEST_MODEL, max_tokens=32, max_thought_chars=16)
    store.close()
    db = str(tmp_path / "d.db")
    args = ["ablate", "distill", "path/abcdefg", "--runs", ",".join(map(str, runs)), "-n", "2", "--k", "1,2",
            "--max-steps", "1", "--rank", "4", "--grad-accum", "1", "--db", db, "--json"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout[result.stdout.index("{") :])
    arms = {a["arm"]: a for a in data["arms"]}
    assert set(arms) == {"base", "reh", "leafe"} and data["status"] == "finished"
    assert arms["reh"]["examples"] == arms["leafe"]["examples"]  # the same data budget
    assert arms["reh"]["counterfactual"] == 0 and arms["leafe"]["counterfactual"] >= 1
    assert all(a["complete"] and set(a["mean_pass_at"]) == {"1", "2"} for a in arms.values())
    assert len(data["comparisons"]) == 3

    store = Store(db)
    evaluations = {e["id"]: e for e in store.evaluations()}
    adapters = {json.loads(evaluations[a["eval_id"]]["model_spec"]).get("adapter") for a in arms.values()}
    assert len(adapters) == 3 and None in adapters  # base without, each arm with its own adapter
    assert len(store.eval_samples(arms["leafe"]["eval_id"])) == 2
    again = CliRunner().invoke(app, ["ablate", "distill", "--resume", str(data["ablation_id"]), "--db", db])
    assert again.exit_code == 2 and "already finished" in again.output
    assert report_distill(store, data["ablation_id"]).arms[2].job_id == arms["leafe"]["job_id"]
    shown = CliRunner().invoke(app, ["ablate", "show", str(data["ablation_id"]), "--db", db])
    assert "pass@2" in shown.stdout and "leafe vs reh" in shown.stdout and "leafe vs base" in shown.stdout
