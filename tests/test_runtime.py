"""The runtime layer: specs recorded with a run, reopened by name, with no flag repeated.

The real CLI is driven end to end with the scripted backend (a registered test double that reads
its replies from a JSON file) and real environments.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import registry
from engine.errors import LeafeError, SettingError
from engine.prompts import PromptTexts
from engine.runtime import model_spec_for, run_env_spec, run_model_spec
from engine.specs import EnvSpec, ModelSpec
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import act, explore_recovery, reflect
from trainer.dataset import DatasetSettings, collect_examples

runner = CliRunner()


def leafe(*args: str):
    return runner.invoke(app, list(args))


def test_specs_survive_json_and_ignore_unknown_keys() -> None:
    spec = ModelSpec(backend="scripted", model="/x/r.json", n_ctx=1024, cache=False, options={"a": 1})
    assert ModelSpec.from_json(spec.to_json()) == spec
    newer = json.dumps({**json.loads(spec.to_json()), "field_of_a_newer_leafe": 3})
    assert ModelSpec.from_json(newer) == spec
    assert EnvSpec.from_json(EnvSpec("code", "/t.jsonl").to_json()) == EnvSpec("code", "/t.jsonl")
    assert ModelSpec.from_json(None) is None


def test_registries_resolve_by_name_and_refuse_unknown_ones(tmp_path: Path) -> None:
    assert {"llama.cpp", "scripted"} <= set(registry.backend_names())
    with pytest.raises(LeafeError, match="unknown backend 'nope'"):
        registry.open_backend(ModelSpec(backend="nope"))
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps([act("a")]))
    backend = registry.open_backend(model_spec_for(str(replies), backend="scripted"))
    assert backend.complete([{"role": "user", "content": "hi"}], temperature=0, max_tokens=8, seed=0).text
    assert type(registry.open_env(EnvSpec("sokoban"))).__name__ == "SokobanEnv"
    with pytest.raises(LeafeError, match="takes no option colour"):
        registry.open_env(EnvSpec("sokoban", options={"colour": "red"}))


def test_model_spec_checks_references_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(SettingError, match="at least"):
        model_spec_for("smollm2-135m", n_ctx=8)
    with pytest.raises(SettingError, match="no adapter file"):
        model_spec_for("smollm2-135m", adapter=str(tmp_path / "missing.gguf"))
    with pytest.raises(SettingError, match="no database"):
        model_spec_for("smollm2-135m", adapter="3")
    assert model_spec_for("").model == "qwen2.5-coder-0.5b"  # the default model


TASKS = {
    "id": "add",
    "title": "Add",
    "statement": "Read a and b, print a+b.",
    "examples": [{"input": "1 2\n", "output": "3\n"}],
    "tests": [{"input": "5 7\n", "output": "12\n"}],
}
RIGHT = "<think>sum</think>\n<action>a, b = map(int, input().split())\nprint(a + b)</action>"
WRONG = "<think>difference</think>\n<action>a, b = map(int, input().split())\nprint(a - b)</action>"


def test_resume_reopens_model_and_environment_from_the_run(tmp_path: Path) -> None:
    """A run of a tasks-file task on the scripted backend stops when its replies run out; the resume
    names neither the backend, the model nor the tasks file: they come from the run's record."""
    tasks = tmp_path / "mine.jsonl"
    tasks.write_text(json.dumps(TASKS) + "\n")
    replies, db = tmp_path / "replies.json", str(tmp_path / "e.db")
    replies.write_text(json.dumps([WRONG]))
    first = leafe("explore", "code/file/add", "--tasks-file", str(tasks), "--backend", "scripted",
                  "--model", str(replies), "--db", db, "--budget", "1")  # fmt: skip
    assert first.exit_code == 1 and "ran out of replies" in first.output
    store = Store(db)
    run = store.get_run(1)
    assert run_model_spec(run).backend == "scripted" and run_env_spec(run).tasks_file == str(tasks.resolve())
    assert PromptTexts.from_json(run["prompts"]).system.startswith("You are an agent")
    store.close()

    replies.write_text(json.dumps([RIGHT]))
    resumed = leafe("explore", "--resume", "1", "--db", db)
    assert resumed.exit_code == 0, resumed.output
    store = Store(db)
    assert store.get_run(1)["status"] == "finished"
    assert any(n.success for n in store.nodes(1))
    store.close()


def test_datasets_are_built_from_the_prompts_the_model_saw(store: Store) -> None:
    """A later edit to the prompt code must not change what is distilled from an old run."""
    run_id, _ = explore_recovery(store, model="scripted")
    recorded = PromptTexts.from_json(store.get_run(run_id)["prompts"])
    older = PromptTexts(system="An older system prompt.", observation="Before step {step}:\n{observation}")
    store.db["runs"].update(run_id, {"prompts": older.to_json()})
    examples, _ = collect_examples(store, DatasetSettings(selection="successful", rehearsal_fraction=1.0))
    assert examples
    for example in examples:
        assert example.messages[0]["content"] == "An older system prompt." != recorded.system
        assert example.messages[1]["content"].startswith("Before step 1:\n")


def test_eval_runs_through_the_registry_with_a_recorded_spec_model(tmp_path: Path) -> None:
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps([act("a"), act("b"), act("c"), act("a"), act("x")]))
    result = leafe("eval", "path/abc", "--backend", "scripted", "--model", str(replies), "-n", "2",
                   "--k", "1,2", "--json", "--db", str(tmp_path / "e.db"))  # fmt: skip
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout[result.stdout.index("{") :])["tasks"]
    assert (row["n"], row["successes"]) == (2, 1)


def test_reflection_replies_are_scripted_too(tmp_path: Path) -> None:
    replies = tmp_path / "r.json"
    replies.write_text(json.dumps([act("a"), act("x"), reflect(2, "at step 2 write b"), act("b"), act("c")]))
    result = leafe("explore", "path/abc", "--backend", "scripted", "--model", str(replies),
                   "--db", str(tmp_path / "e.db"), "--budget", "2", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    (tree,) = json.loads(result.stdout)
    assert [b["outcome"] for b in tree["branches"]] == ["failure", "success"]


def test_a_tasks_file_goes_only_to_the_environment_that_takes_one(tmp_path: Path) -> None:
    """Exploring a Sokoban level and a tasks-file task together (the TUI's start job failed on it)."""
    from engine.runtime import env_spec_for

    tasks = tmp_path / "mine.jsonl"
    tasks.write_text(json.dumps(TASKS) + "\n")
    assert env_spec_for("sokoban/fixed-1", tasks) == EnvSpec("sokoban")
    assert env_spec_for("code/file/add", tasks).tasks_file == str(tasks.resolve())
    assert (
        type(registry.open_env(env_spec_for("sokoban/fixed-1", tasks, check_task=False))).__name__
        == "SokobanEnv"
    )


def test_a_finished_run_cannot_be_claimed_for_a_resume(store: Store) -> None:
    """Checked under the write lock: a resume racing one that just finished must not explore it again."""
    from engine.store import StoreError

    run_id, _ = explore_recovery(store)
    assert store.get_run(run_id)["status"] == "finished"
    with pytest.raises(StoreError, match="already finished"):
        store.claim_run(run_id)
    assert store.claim_run(run_id, finished_ok=True)["status"] == "finished"  # a person's re-branch may
