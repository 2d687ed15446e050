"""The Stage-1 ablation on the scripted backend: equal step budgets, the three strategies' behaviour,
resume after a kill, and the report."""

from __future__ import annotations

import json

import pytest

from engine.ablation import create_explore_ablation, report, run_explore_ablation
from engine.backends.scripted import ScriptedBackend
from engine.errors import SettingError
from engine.events import NodeCommitted
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


def right_letters(messages):
    """Always the right letter of path/abcdefg: an episode only ends when the budget cuts it."""
    if is_reflection(messages):
        return reflect(2, "keep going")
    return act("abcdefg"[sum(1 for m in messages if m["role"] == "assistant")])


def test_a_cut_episode_ends_as_budget_spent(store: Store) -> None:
    ablation_id = ablate(store, right_letters, 3, tasks=["path/abcdefg"], reflect_every=10)
    for strategy in STRATEGIES:
        run_id = store.ablation_runs(ablation_id)[(strategy, "path/abcdefg")]
        assert [(b.kind, b.status, b.outcome) for b in store.branches(run_id)] == [
            ("root", "done", "budget spent")
        ]
        assert store.steps_used(run_id) == 3 and store.reflections(run_id) == []


class Killed(BaseException):
    """Stands for SIGKILL in-process."""


@pytest.mark.parametrize("kill_at_step", [3, 6])
def test_a_killed_ablation_resumes_without_repeating_a_cell(tmp_path, kill_at_step: int) -> None:
    """Killed as the tree cell commits a step (6: its last, the budget spent with the episode not yet
    closed), the resumed ablation equals one that was never killed."""
    reference = Store(tmp_path / "reference.db")
    ref_id = ablate(reference, wrong_at_two, 6)

    store = Store(tmp_path / "killed.db")
    ablation_id = create_explore_ablation(
        store, TASKS, 6, ExploreConfig(), model_spec=ModelSpec(model="scripted", backend="scripted"),
        env_specs={t: EnvSpec("path") for t in TASKS},
    )  # fmt: skip

    def kill(event) -> None:
        tree = (
            isinstance(event, NodeCommitted) and store.get_run(event.run_id)["config"]["strategy"] == "tree"
        )
        if tree and event.node.step > 0 and store.steps_used(event.run_id) == kill_at_step:
            raise Killed

    envs = {t: PathTestEnv() for t in TASKS}
    with pytest.raises(Killed):
        run_explore_ablation(
            store, ablation_id, ScriptedBackend(reply_fn=wrong_at_two), envs, model="scripted", on_event=kill
        )
    assert store.ablation(ablation_id)["status"] == "interrupted"
    started = dict(store.ablation_runs(ablation_id))
    run_explore_ablation(store, ablation_id, ScriptedBackend(reply_fn=wrong_at_two), envs, model="scripted")
    links = store.ablation_runs(ablation_id)
    assert all(links[cell] == run for cell, run in started.items())  # the killed cell was resumed
    assert len(store.list_runs()) == len(links) == len(STRATEGIES) * len(TASKS)
    ours = {
        r.strategy: (r.steps, r.successes, r.solved, r.episodes) for r in report(store, ablation_id).results
    }
    theirs = {
        r.strategy: (r.steps, r.successes, r.solved, r.episodes) for r in report(reference, ref_id).results
    }
    assert ours == theirs
    for run_id in links.values():
        assert all(b.status in ("done", "skipped") for b in store.branches(run_id))  # nothing left running
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
    # every strategy finishes path/abc; path/abcdefg stays unstarted
    for strategy in ("independent", "refine"):
        config = ExploreConfig(budget=3, step_budget=3, strategy=strategy)
        run = Explorer(store, ScriptedBackend(reply_fn=wrong_at_two), PathTestEnv(), config).start(
            "path/abc", "scripted"
        )
        store.link_ablation_run(ablation_id, strategy, "path/abc", run)
    partial = report(store, ablation_id)
    assert partial.tasks == ["path/abc"] and not partial.complete
    assert all(r.tasks == 1 and r.steps == 3 for r in partial.results)


def test_bad_ablation_settings_are_refused(store: Store) -> None:
    spec = ModelSpec(model="scripted", backend="scripted")
    with pytest.raises(SettingError, match="at least 1"):
        create_explore_ablation(store, TASKS, 0, ExploreConfig(), model_spec=spec, env_specs={})
    with pytest.raises(SettingError, match="unknown strategy"):
        create_explore_ablation(
            store, TASKS, 3, ExploreConfig(), model_spec=spec, env_specs={}, strategies=("beam",)
        )
    with pytest.raises(SettingError, match="at least one strategy"):
        create_explore_ablation(
            store, TASKS, 3, ExploreConfig(), model_spec=spec, env_specs={}, strategies=()
        )
    with pytest.raises(SettingError, match="strategy"):
        ExploreConfig(strategy="beam").validate()
    twice = create_explore_ablation(
        store,
        [*TASKS, TASKS[0]],
        3,
        ExploreConfig(),
        model_spec=spec,
        env_specs={},
        strategies=("tree", "tree"),
    )
    assert store.ablation(twice)["tasks"] == TASKS and store.ablation(twice)["settings"]["strategies"] == [
        "tree"
    ]


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
    assert child.outcome == "success" and store.steps_used(run_id) > 4
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
    no_tree = leafe("ablate", "explore", "path/abc", "--strategies", "independent", "--budget", "1",
                    "--backend", "scripted", "--model", str(replies), "--db", db)  # fmt: skip
    assert no_tree.exit_code == 0, no_tree.output
    for args, message in (
        (["--from-ablation", "2"], "no tree strategy"),
        (["--from-ablation", "9"], "no ablation 9"),
        (["--runs", "1"], "give the runs"),  # with --from-ablation too
    ):
        extra = ["--from-ablation", "1"] if args[0] == "--runs" else []
        bad = leafe("ablate", "distill", "path/abcdefg", *args, *extra, "--db", db)
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output, bad.output
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
