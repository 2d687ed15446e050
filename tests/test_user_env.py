"""An environment from its own package (examples/leafe-guess), found through the
``leafe.environments`` entry point only: listed, played, explored and checked like a built-in."""

from __future__ import annotations

import json
import re
from importlib.metadata import entry_points
from pathlib import Path

from typer.testing import CliRunner

from engine.envs import _BUILTIN, env_names
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import act, is_reflection, reflect


def test_the_example_package_is_found_through_its_entry_point() -> None:
    assert "guess" not in _BUILTIN  # nothing in leafe names it
    assert "guess" in {e.name for e in entry_points(group="leafe.environments")}, (
        "examples/leafe-guess is not installed (make setup installs it)"
    )
    assert "guess" in env_names()
    listed = CliRunner().invoke(app, ["tasks", "list", "--env", "guess", "--json"])
    assert listed.exit_code == 0 and len(json.loads(listed.stdout)) == 20
    checked = CliRunner().invoke(app, ["env", "check", "guess"])
    assert checked.exit_code == 0 and "guess passes" in checked.output


def _binary_search(messages) -> str:
    """A scripted agent: guesses 1 first (a wasted step), then bisects on the hints it was given;
    its reflection rolls back to step 1 with the lesson to start in the middle."""
    if is_reflection(messages):
        return reflect(1, "start at 50 and halve the range after every hint")
    low, high = 1, 100
    for m in messages:
        found = re.search(r"(\d+): the number is (higher|lower)", m["content"])
        if m["role"] == "user" and found:
            guess = int(found.group(1))
            low, high = (guess + 1, high) if found.group(2) == "higher" else (low, guess - 1)
    steps = sum(1 for m in messages if m["role"] == "assistant")
    if steps == 0 and "halve the range" not in json.dumps(messages):
        return act("1", "small numbers first")
    if steps < 2 and "halve the range" not in json.dumps(messages):
        return act("2", "still small")
    return act(str((low + high) // 2), "bisect")


def test_explore_builds_a_tree_on_the_user_environment(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    from engine.backends.scripted import ScriptedBackend
    from engine.envs import load_env
    from engine.explorer import ExploreConfig, Explorer

    store = Store(db)
    env = load_env("guess")
    env.max_steps = 3  # too few for the wasteful start: the first episode fails, the branch bisects
    run_id = Explorer(store, ScriptedBackend(reply_fn=_binary_search), env, ExploreConfig(budget=3)).start(
        "guess/0", "scripted"
    )
    outcomes = {b.kind: b.outcome for b in store.branches(run_id)}
    assert outcomes["root"] == "failure" and "rollback" in outcomes
    shown = CliRunner().invoke(app, ["tree", str(run_id), "--db", str(db), "--json"])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["run"]["env"] == "guess"
