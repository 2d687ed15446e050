"""One-line errors instead of tracebacks, flag values checked before the model loads, `leafe tui`
without a terminal, and code feedback without memory addresses."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import leafe_tui.explore_cmd as explore_cmd
from engine.backends.scripted import ScriptedBackend
from engine.envs.base import ParsedAction
from engine.envs.code import CodeEnv
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import act

runner = CliRunner()
DEEP = "[" * 100_000 + "]" * 100_000  # valid JSON, nested past the parser's recursion limit


def invoke(*args: str):
    return runner.invoke(app, list(args))


def one_line_error(result, *words: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    message = result.output.strip()
    assert "Traceback" not in message and len(message.splitlines()) <= 2, message
    for word in words:
        assert word in message, message


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model load of explore and eval, replaced by a scripted backend; records each load."""
    loaded: list[str] = []

    def load(request, err):
        loaded.append(request.model)
        return "scripted", ScriptedBackend(reply_fn=lambda messages: act("up"))

    monkeypatch.setattr(explore_cmd, "load_backend", load)
    return loaded


def run_count(db: Path) -> int:
    if not db.exists():
        return 0
    store = Store(db)
    count = len(store.list_runs())
    store.close()
    return count


# --- one-line errors --------------------------------------------------------------------------


def test_eval_with_an_unknown_adapter_id(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    Store(db).close()
    one_line_error(invoke("eval", "sokoban/fixed-1", "--adapter", "7", "--db", str(db)), "no adapter 7")
    one_line_error(invoke("eval", "sokoban/fixed-1", "--adapter", "7", "--db", str(tmp_path / "no.db")))


def test_a_deeply_nested_tasks_file_line(tmp_path: Path, loads) -> None:
    tasks = tmp_path / "tasks.jsonl"
    valid = {"id": "x", "statement": "Print 1.", "examples": [], "tests": [{"input": "", "output": "1\n"}]}
    tasks.write_text(json.dumps(valid) + "\n" + DEEP + "\n")
    one_line_error(invoke("tasks", "list", "--tasks-file", str(tasks)), f"{tasks}:2", "nested too deeply")
    db = tmp_path / "runs.db"
    result = invoke("explore", "code/file/x", "--tasks-file", str(tasks), "--db", str(db))
    one_line_error(result, "nested too deeply")
    assert loads == []


def test_a_deeply_nested_actions_file(tmp_path: Path) -> None:
    actions = tmp_path / "actions.json"
    actions.write_text(DEEP)
    one_line_error(invoke("play", "sokoban/fixed-1", "--actions", str(actions)), "nested too deeply")


def test_a_bogus_sandbox_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loads) -> None:
    monkeypatch.setenv("LEAFE_SANDBOX", "bogus")
    db = tmp_path / "runs.db"
    one_line_error(invoke("explore", "code/suite/balanced-brackets", "--db", str(db)), "LEAFE_SANDBOX")
    assert loads == [] and run_count(db) == 0
    actions = tmp_path / "a.json"
    actions.write_text(json.dumps(["print(1)"]))
    result = invoke("play", "code/suite/balanced-brackets", "--actions", str(actions))
    one_line_error(result, "LEAFE_SANDBOX", "bogus")


# --- settings checked before the model loads ---------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-tokens", "0"], "max_tokens"),
        (["--max-tokens", "-5"], "max_tokens"),
        (["--temperature", "-0.1"], "temperature"),
        (["--reflect-temperature", "-1"], "reflect_temperature"),
        (["--n-ctx", "0"], "context length"),
    ],
)
def test_explore_refuses_bad_settings_before_loading(tmp_path: Path, loads, flags, words) -> None:
    db = tmp_path / "runs.db"
    one_line_error(invoke("explore", "sokoban/fixed-1", *flags, "--db", str(db)), words)
    assert loads == [] and run_count(db) == 0  # no failed run left behind


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--max-tokens", "0"], "--max-tokens"),
        (["--temperature", "-1"], "--temperature"),
        (["--max-steps", "0"], "--max-steps"),
        (["-n", "4", "--k", "1,8"], "--k 8"),
        (["--n-ctx", "0"], "context length"),
    ],
)
def test_eval_refuses_bad_settings_before_loading(loads, flags, words) -> None:
    one_line_error(invoke("eval", "sokoban/fixed-1", *flags), words)
    assert loads == []


def test_eval_default_k_fits_small_n(loads) -> None:
    result = invoke("eval", "sokoban/fixed-1", "-n", "2", "--max-steps", "1", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.stdout[result.stdout.index("{") :])["tasks"][0]
    assert set(row["pass_at"]) == {"1", "2"}


# --- the TUI needs a terminal ------------------------------------------------------------------


def test_tui_without_a_terminal_says_so(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    Store(db).close()
    command = [sys.executable, "-m", "leafe_tui", "tui", "--db", str(db)]
    result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "needs a terminal" in result.stderr, result.stderr
    assert "\x1b" not in result.stdout  # no escape codes written into the pipe


# --- code feedback is the same in every process ------------------------------------------------


def test_code_feedback_has_no_memory_addresses() -> None:
    env = CodeEnv()
    env.reset("code/suite/balanced-brackets")
    result = env.step(ParsedAction("print(x for x in [])"))
    assert "<generator object <genexpr> at 0x…>" in result.feedback
    assert not re.search(r"0x[0-9a-f]{4,}", result.observation)
