"""The Stage-1 ablation on the scripted backend: equal step budgets, the three strategies' behaviour,
resume after a kill, and the report."""

from __future__ import annotations

import json

import pytest

from engine.ablation import create_explore_ablation, report, run_explore_ablation
from engine.backends.scripted import ScriptedBackend
from engine.errors import SettingError
from engine.explorer import STRATEGIES, ExploreConfig, Explorer
from engine.specs import EnvSpec, ModelSpec
from engine.store import Store
from tests.doubles import PathTestEnv, act, guided, is_reflection, reflect

TASKS = ["path/abc", "path/abcdefg"]


def wrong_at_two(messages):
    """Right letters except at step 2 unless an experience summary is in the prompt; reflections
    ask to roll back to step 2."""
    if is_reflection(messages):
        return reflect(2, "at step 2 write the second letter of the word")
    step = sum(1 for m in messages if m["role"] == "assistant") + 1
    word = "abcdefg" if "7 letters" in messages[1]["content"] else "abc"
    if step == 2 and not guided(messages):
        return act("x")
    return act(word[step - 1])


def ablate(store: Store, reply, budget: int, tasks=TASKS, **config) -> int:
    ablation_id = create_explore_ablation(
        store,
        tasks,
        budget,
        ExploreConfig(**config),
        model_spec=ModelSpec(model="scripted", backend="scripted"),
        env_specs={t: EnvSpec("path") for t in tasks},
    )
    envs = {t: PathTestEnv() for t in tasks}
    run_explore_ablation(store, ablation_id, ScriptedBackend(reply_fn=reply), envs, model="scripted")
    return ablation_id


@pytest.mark.parametrize("budget", [1, 5, 9])
def test_every_strategy_spends_exactly_the_budget(store: Store, budget: int) -> None:
    ablation_id = ablate(store, wrong_at_two, budget)
    result = report(store, ablation_id)
    assert result.complete and result.tasks == TASKS
    links = store.ablation_runs(ablation_id)
    assert set(links) == {(s, t) for s in STRATEGIES for t in TASKS}
    for (strategy, task), run_id in links.items():
        assert store.steps_used(run_id) == budget, (strategy, task)
        assert store.get_run(run_id)["status"] == "finished"
    for strategy in result.results:
        assert strategy.steps == budget * len(TASKS)


def test_the_strategies_spend_the_budget_differently(store: Store) -> None:
    ablation_id = ablate(store, wrong_at_two, 9, tasks=["path/abc"])
    runs = {s: r for (s, _), r in store.ablation_runs(ablation_id).items()}

    assert store.reflections(runs["independent"]) == []
    assert {b.kind for b in store.branches(runs["independent"])} <= {"root", "restart"}

    retries = [b for b in store.branches(runs["refine"]) if b.kind == "rollback"]
    assert retries and {b.rollback_step for b in retries} == {1}  # always from the beginning
    assert {r["trigger"] for r in store.reflections(runs["refine"])} == {"failure"}

    rollbacks = [b for b in store.branches(runs["tree"]) if b.kind == "rollback"]
    assert rollbacks and {b.rollback_step for b in rollbacks} == {2}

    by_strategy = {r.strategy: r for r in report(store, ablation_id).results}
    assert by_strategy["independent"].successes == 0  # it never sees the lesson
    assert by_strategy["tree"].solved == by_strategy["refine"].solved == 1
    assert by_strategy["tree"].recovered >= 1 and by_strategy["refine"].recovered >= 1
    # rolling back to step 2 replays step 1 instead of acting it again: more successes for the budget
    assert by_strategy["tree"].successes > by_strategy["refine"].successes
    assert all(r.generated_tokens > 0 for r in by_strategy.values())


def test_a_cut_episode_ends_as_budget_spent(store: Store) -> None:
    ablation_id = ablate(store, wrong_at_two, 2, tasks=["path/abcdefg"], reflect_every=10)
    run_id = store.ablation_runs(ablation_id)[("tree", "path/abcdefg")]
    outcomes = [b.outcome for b in store.branches(run_id)]
    assert store.steps_used(run_id) == 2
    assert "budget spent" not in outcomes or outcomes[-1] == "budget spent"


class Killed(BaseException):
    """Stands for SIGKILL in-process."""


def test_a_killed_ablation_resumes_without_repeating_a_cell(tmp_path) -> None:
    reference = Store(tmp_path / "reference.db")
    ref_id = ablate(reference, wrong_at_two, 6)

    store = Store(tmp_path / "killed.db")
    calls = {"n": 0}

    def dying(messages):
        calls["n"] += 1
        if calls["n"] == 14:  # inside the second or third cell
            raise Killed
        return wrong_at_two(messages)

    with pytest.raises(Killed):
        ablate(store, dying, 6)
    ablation_id = store.ablations()[-1]["id"]
    assert store.ablation(ablation_id)["status"] == "interrupted"
    started = dict(store.ablation_runs(ablation_id))
    run_explore_ablation(
        store,
        ablation_id,
        ScriptedBackend(reply_fn=wrong_at_two),
        {t: PathTestEnv() for t in TASKS},
        model="scripted",
    )
    links = store.ablation_runs(ablation_id)
    assert all(links[cell] == run for cell, run in started.items())  # the killed cell was resumed
    assert len(store.list_runs()) == len(links) == len(STRATEGIES) * len(TASKS)
    ours = {r.strategy: (r.steps, r.successes, r.solved) for r in report(store, ablation_id).results}
    theirs = {r.strategy: (r.steps, r.successes, r.solved) for r in report(reference, ref_id).results}
    assert ours == theirs
    assert store.ablation(ablation_id)["status"] == "finished"


def test_a_partial_report_compares_only_tasks_every_strategy_finished(store: Store) -> None:
    ablation_id = create_explore_ablation(
        store,
        TASKS,
        3,
        ExploreConfig(),
        model_spec=ModelSpec(model="scripted", backend="scripted"),
        env_specs={t: EnvSpec("path") for t in TASKS},
    )
    assert report(store, ablation_id).tasks == []
    # only the first task's tree cell
    config = ExploreConfig(budget=3, step_budget=3)
    run_id = Explorer(store, ScriptedBackend(reply_fn=wrong_at_two), PathTestEnv(), config).start(
        "path/abc", "scripted"
    )
    store.link_ablation_run(ablation_id, "tree", "path/abc", run_id)
    partial = report(store, ablation_id)
    assert partial.tasks == [] and not partial.complete


def test_bad_ablation_settings_are_refused(store: Store) -> None:
    spec = ModelSpec(model="scripted", backend="scripted")
    with pytest.raises(SettingError, match="at least 1"):
        create_explore_ablation(store, TASKS, 0, ExploreConfig(), model_spec=spec, env_specs={})
    with pytest.raises(SettingError, match="unknown strategy"):
        create_explore_ablation(
            store, TASKS, 3, ExploreConfig(), model_spec=spec, env_specs={}, strategies=("beam",)
        )
    with pytest.raises(SettingError, match="strategy"):
        ExploreConfig(strategy="beam").validate()


def test_a_person_rebranch_runs_whole_after_the_step_budget(store: Store) -> None:
    ablation_id = ablate(store, wrong_at_two, 4, tasks=["path/abc"])
    run_id = store.ablation_runs(ablation_id)[("tree", "path/abc")]
    source = next(b for b in store.branches(run_id) if b.kind == "rollback")
    explorer = Explorer(
        store,
        ScriptedBackend(reply_fn=wrong_at_two),
        PathTestEnv(),
        ExploreConfig(**store.get_run(run_id)["config"]),
    )
    child = explorer.rebranch(run_id, source.id, "at step 2 write b")
    assert child.outcome == "success"
    assert store.get_run(run_id)["status"] == "finished"


# --- the command -------------------------------------------------------------------------------
def test_ablate_explore_command_end_to_end(tmp_path) -> None:
    from typer.testing import CliRunner

    from leafe_tui.cli import app

    def leafe(*args: str):
        return CliRunner().invoke(app, list(args))

    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps([act("x")] * 40))  # every episode fails at its first step
    db = str(tmp_path / "a.db")
    result = leafe("ablate", "explore", "path/abc", "--budget", "3", "--backend", "scripted",
                   "--model", str(replies), "--db", db, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    table = json.loads(result.stdout[result.stdout.index("{") :])
    assert table["complete"] and [s["strategy"] for s in table["strategies"]] == list(STRATEGIES)
    assert all(s["steps"] == 3 and s["solved"] == 0 for s in table["strategies"])
    independent = next(s for s in table["strategies"] if s["strategy"] == "independent")
    assert independent["episodes"] == 3  # three one-step failures, no reflection between them

    shown = leafe("ablate", "show", str(table["ablation_id"]), "--db", db, "--json")
    assert json.loads(shown.stdout) == table
    listed = json.loads(leafe("ablate", "list", "--db", db, "--json").stdout)
    assert [(a["kind"], a["status"], a["budget"]) for a in listed] == [("explore", "finished", 3)]
    runs = json.loads(leafe("runs", "--db", db, "--json").stdout)
    assert sorted(r["id"] for r in runs) == sorted(s["runs"][0] for s in table["strategies"])
    plain = leafe("ablate", "show", "1", "--db", db)
    assert "independent" in plain.stdout and "3 environment steps" in plain.stdout

    again = leafe("ablate", "explore", "--resume", "1", "--db", db)
    assert again.exit_code == 2 and "already finished" in again.output
    for args, message in (
        (["path/abc", "--budget", "0"], "at least 1"),
        (["path/abc", "--strategies", "beam"], "unknown strategy"),
        ([], "give at least one task"),
        (["nowhere/1"], "nowhere"),
    ):
        bad = leafe("ablate", "explore", *args, "--backend", "scripted", "--model", str(replies), "--db", db)
        assert bad.exit_code == 2 and message in bad.output, (args, bad.output)
        assert "Traceback" not in bad.output
    missing = leafe("ablate", "show", "9", "--db", db)
    assert missing.exit_code == 2 and "no ablation 9" in missing.output


def test_explore_takes_a_strategy_and_a_step_budget(tmp_path) -> None:
    from typer.testing import CliRunner

    from leafe_tui.cli import app

    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps([act("x")] * 20))
    db = str(tmp_path / "e.db")
    common = ["path/abc", "--backend", "scripted", "--model", str(replies), "--db", db]
    result = CliRunner().invoke(
        app, ["explore", *common, "--strategy", "independent", "--step-budget", "4", "--budget", "9"]
    )
    assert result.exit_code == 0, result.output
    store = Store(db)
    (run,) = store.list_runs()
    assert (run["config"]["strategy"], run["config"]["step_budget"]) == ("independent", 4)
    assert store.steps_used(run["id"]) == 4 and store.reflections(run["id"]) == []
    bad = CliRunner().invoke(app, ["explore", *common, "--strategy", "beam"])
    assert bad.exit_code == 2 and "unknown exploration strategy 'beam'" in bad.output
