"""The `leafe` CLI verbs through Typer's runner: JSON shapes, examples, and one-line errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.backends.scripted import ScriptedBackend
from engine.envs.sokoban import SokobanEnv, load_level
from engine.envs.sokoban_levels import solve
from engine.explorer import ExploreConfig, Explorer
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import PathTestEnv, act, guided, is_reflection, reflect

runner = CliRunner()


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input)


def test_tasks_list_json_covers_both_environments() -> None:
    result = invoke("tasks", "list", "--json")
    assert result.exit_code == 0, result.output
    ids = {row["id"] for row in json.loads(result.stdout)}
    assert any(i.startswith("sokoban/") for i in ids) and any(i.startswith("code/suite/") for i in ids)
    assert any(i.startswith("code/humaneval/") for i in ids)


def test_tasks_list_filters_by_env() -> None:
    result = invoke("tasks", "list", "--env", "sokoban", "--json")
    assert {row["env"] for row in json.loads(result.stdout)} == {"sokoban"}


def test_play_with_actions_file_solves_a_level(tmp_path: Path) -> None:
    env = SokobanEnv()
    moves = solve(load_level("sokoban/fixed-1"))
    assert moves
    actions = tmp_path / "moves.json"
    actions.write_text(json.dumps(moves))
    result = invoke("play", "sokoban/fixed-1", "--actions", str(actions), "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["observation"] == env.reset("sokoban/fixed-1")
    assert len(record["steps"]) == len(moves) and record["steps"][-1]["success"]


def test_play_interactively_reads_actions_from_stdin() -> None:
    result = invoke("play", "sokoban/fixed-1", input="jump\n")
    assert result.exit_code == 0
    assert "Invalid action" in result.output and "not solved after 1 steps" in result.output


def test_play_shows_invalid_moves_in_json(tmp_path: Path) -> None:
    actions = tmp_path / "a.json"
    actions.write_text(json.dumps(["sideways"]))
    result = invoke("play", "sokoban/fixed-1", "--actions", str(actions), "--json")
    step = json.loads(result.stdout)["steps"][0]
    assert not step["valid"] and "up, down, left, right" in step["feedback"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("play", "nosuchenv/1"), "unknown environment"),
        (("play", "sokoban/nope"), "sokoban"),
        (("play", "no-slash"), "ENV/NAME"),
        (("play", "sokoban/fixed-1", "--actions", "/nonexistent/moves.json"), "no actions file"),
        (("tree", "1", "--db", "/nonexistent/dir/leafe.db"), "no database"),
        (("explore",), "at least one task"),
        (("explore", "sokoban/fixed-1", "--model", "no-such-model"), "unknown model"),
        (("explore", "sokoban/fixed-1", "--model", "/tmp/not-here.gguf"), "not-here.gguf"),
        (("explore", "sokoban/fixed-1", "--budget", "0"), "attempt budget"),
    ],
)
def test_user_mistakes_get_one_line_errors(args: tuple[str, ...], expected: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    message = result.output.strip()
    assert expected.lower() in message.lower()
    assert "Traceback" not in message and len(message.splitlines()) <= 2


def _scripted_run(db: Path) -> int:
    def reply(messages):
        if is_reflection(messages):
            return reflect(2, "at step 2 write 'b'")
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        return act("x" if step == 2 and not guided(messages) else "abc"[step - 1])

    store = Store(db)
    run_id = Explorer(store, ScriptedBackend(reply_fn=reply), PathTestEnv(), ExploreConfig(budget=2)).start(
        "path/abc", "scripted"
    )
    store.close()
    return run_id


def test_runs_and_tree_json(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = _scripted_run(db)
    listed = json.loads(invoke("runs", "--db", str(db), "--json").stdout)
    assert [r["id"] for r in listed] == [run_id] and listed[0]["successes"] == 1
    data = json.loads(invoke("tree", str(run_id), "--db", str(db), "--json").stdout)
    node_keys = {
        "id",
        "parent_id",
        "action",
        "feedback",
        "success",
        "prompt_tokens",
        "cached_tokens",
        "generated_tokens",
    }
    assert all(node_keys <= set(n) for n in data["nodes"])
    rollback = [b for b in data["branches"] if b["kind"] == "rollback"]
    assert rollback and {"id", "rollback_step", "summary"} <= set(rollback[0])
    assert rollback[0]["reflection"]["raw_response"].startswith("<think>")


def test_tree_prints_branch_with_summary(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = _scripted_run(db)
    result = invoke("tree", str(run_id), "--db", str(db))
    assert result.exit_code == 0
    assert "branch #2" in result.output and "at step 2 write 'b'" in result.output and "τ=2" in result.output


def test_compact_tree_puts_each_episode_on_one_line(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    run_id = _scripted_run(db)
    lines = invoke("tree", str(run_id), "--db", str(db), "--compact").output.splitlines()
    root = next(i for i, line in enumerate(lines) if "episode #1" in line)
    assert "1· 2✗" in lines[root + 1]  # step 2 was the wrong letter
    branch = next(i for i, line in enumerate(lines) if "branch #2" in line)
    assert branch > root and "2· 3✓" in lines[branch + 1]


def test_unknown_run_is_a_one_line_error(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    _scripted_run(db)
    result = invoke("tree", "99", "--db", str(db))
    assert result.exit_code == 2 and "no run 99" in result.output


def test_config_file_sets_defaults_and_flags_override(tmp_path: Path, monkeypatch) -> None:
    db = tmp_path / "runs.db"
    run_id = _scripted_run(db)
    config = tmp_path / "leafe.toml"
    config.write_text(f'[tree]\ndb = "{db}"\n')
    monkeypatch.setenv("LEAFE_CONFIG", str(config))
    assert invoke("tree", str(run_id), "--json").exit_code == 0  # --db came from the file
    other = tmp_path / "other.db"
    result = invoke("tree", str(run_id), "--db", str(other))
    assert result.exit_code == 2 and "no database" in result.output


def test_bad_config_file_is_a_one_line_error(tmp_path: Path, monkeypatch) -> None:
    config = tmp_path / "leafe.toml"
    config.write_text("[explore]\nbugdet = 3\n")
    monkeypatch.setenv("LEAFE_CONFIG", str(config))
    result = invoke("runs")
    assert result.exit_code == 2 and "bugdet" in result.output


def test_plain_live_view_prints_one_line_per_step_and_reflection(tmp_path: Path) -> None:
    from rich.console import Console

    from leafe_tui.explore_cmd import LiveView

    store = Store(tmp_path / "live.db")
    console = Console(record=True, width=200)

    def reply(messages):
        if is_reflection(messages):
            return reflect(2, "at step 2 write the letter b")
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        return act("x" if step == 2 and not guided(messages) else "abc"[step - 1])

    view = LiveView(store, None, console)
    Explorer(
        store, ScriptedBackend(reply_fn=reply), PathTestEnv(), ExploreConfig(budget=2), on_event=view
    ).start("path/abc", "scripted")
    lines = console.export_text().splitlines()
    steps = [line for line in lines if " branch #" in line and "reflection" not in line]
    assert len(steps) == len([n for n in store.nodes(1) if n.step > 0]) == 4
    assert any("reflection at node" in line and "roll back to step 2" in line for line in lines)


def test_play_reads_a_code_action_over_several_lines(tmp_path: Path) -> None:
    """A program is typed over several lines and ends with a lone dot (it was one line per action)."""
    tasks = tmp_path / "mine.jsonl"
    tasks.write_text(
        json.dumps(
            {
                "id": "add",
                "title": "Add",
                "statement": "Read a and b, print a+b.",
                "examples": [{"input": "1 2\n", "output": "3\n"}],
                "tests": [{"input": "5 7\n", "output": "12\n"}],
            }  # fmt: skip
        )
        + "\n"
    )
    program = "a, b = map(int, input().split())\nprint(a + b)\n.\n"
    result = invoke("play", "code/file/add", "--tasks-file", str(tasks), input=program)
    assert result.exit_code == 0, result.output
    assert "passed the visible examples and all 1 hidden tests" in result.output


def test_live_view_grows_its_tree_without_rereading_the_run(tmp_path: Path) -> None:
    """The live tree is updated one event at a time (it re-read the whole run at every event) and
    ends exactly as the finished run's tree."""
    from rich.console import Console
    from rich.live import Live

    from engine.run_tree import RunTree
    from leafe_tui.explore_cmd import LiveView
    from leafe_tui.render import tree_renderable

    store = Store(tmp_path / "live.db")
    whole_run_reads = []
    for name in ("nodes", "tree"):
        original = getattr(store, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            whole_run_reads.append(_name)
            return _original(*args, **kwargs)

        setattr(store, name, counted)
    console = Console(record=True, width=200, file=io.StringIO())
    with Live(console=console, auto_refresh=False) as live:
        view = LiveView(store, live, console)
        backend = ScriptedBackend(reply_fn=_letters_with_one_rollback)
        explorer = Explorer(store, backend, PathTestEnv(), ExploreConfig(budget=3), on_event=view)
        explorer.start("path/abc", "scripted")
        events_seen = len(whole_run_reads)
        drawn = Console(record=True, width=200, file=io.StringIO())
        drawn.print(view.drawings[1])
    final = Console(record=True, width=200, file=io.StringIO())
    final.print(tree_renderable(RunTree.load(store, 1), compact=True))
    assert final.export_text() in drawn.export_text()
    explorer_reads = whole_run_reads[:events_seen]
    assert explorer_reads.count("tree") == 0  # no whole-run dict per event
    assert explorer_reads.count("nodes") <= 1  # the one load when the run's first event came


def _letters_with_one_rollback(messages):
    if is_reflection(messages):
        return reflect(2, "at step 2 write the letter b")
    step = sum(1 for m in messages if m["role"] == "assistant") + 1
    return act("x" if step == 2 and not guided(messages) else "abc"[step - 1])


def test_config_file_reaches_the_verbs_of_groups(tmp_path: Path, monkeypatch) -> None:
    """[dataset.list] and [models.list] set defaults too (only top-level verbs read the file before)."""
    db = tmp_path / "runs.db"
    _scripted_run(db)
    config = tmp_path / "leafe.toml"
    config.write_text(f'[dataset.list]\ndb = "{db}"\njson = true\n\n[models.list]\njson = true\n')
    monkeypatch.setenv("LEAFE_CONFIG", str(config))
    listed = invoke("dataset", "list")
    assert listed.exit_code == 0, listed.output
    assert json.loads(listed.stdout) == []  # JSON (from the file) of the database named in the file
    assert isinstance(json.loads(invoke("models", "list").stdout), list)
    config.write_text("[dataset.build]\nrehersal_fraction = 0.5\n")
    wrong = invoke("runs")
    assert wrong.exit_code == 2 and "[dataset.build] has unknown keys rehersal_fraction" in wrong.output
