"""Who owns a run: two resumes of one run cannot both go on; a reused pid does not lock a run for ever;
``--force``; a resumed run keeps its model; replay ignores memory addresses in observations.

The model is not the point here: the CLI's model load is replaced by a scripted backend (the run's
recorded model is still a real one, so the one real second process below could run it).
"""

from __future__ import annotations

import itertools
import multiprocessing
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import leafe_tui.explore_cmd as explore_cmd
from engine.backends.base import BackendError
from engine.backends.scripted import ScriptedBackend
from engine.envs.base import ParsedAction, StepResult
from engine.envs.sokoban import SokobanEnv
from engine.explorer import ExploreConfig, Explorer
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import PathTestEnv, act

runner = CliRunner()
MODEL = "smollm2-135m"


def invoke(*args: str):
    return runner.invoke(app, list(args))


def sokoban_reply(messages: list[dict[str, str]]) -> str:
    return act("up")


def interrupted_run(db: Path, steps: int = 2) -> int:
    """A sokoban run recorded with the real test model, interrupted (Ctrl-C) after ``steps`` steps."""
    calls = itertools.count()

    def reply(messages: list[dict[str, str]]) -> str:
        if next(calls) >= steps:
            raise KeyboardInterrupt
        return sokoban_reply(messages)

    store = Store(db)
    explorer = Explorer(store, ScriptedBackend(reply_fn=reply), SokobanEnv(), ExploreConfig(budget=1))
    with pytest.raises(KeyboardInterrupt):
        explorer.start("sokoban/fixed-1", MODEL)
    (run,) = store.list_runs()
    assert run["status"] == "interrupted"
    store.close()
    return run["id"]


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Replace the CLI's model load by a scripted backend; the list records each load's model."""
    loaded: list[str] = []

    def load(request, err):
        model = request.model_spec.model if request.model_spec else request.model
        loaded.append(model)
        return model, ScriptedBackend(reply_fn=sokoban_reply)

    monkeypatch.setattr(explore_cmd, "load_backend", load)
    return loaded


def unique_steps(db: Path, run_id: int) -> bool:
    store = Store(db)
    steps = [(n.branch_id, n.step) for n in store.nodes(run_id)]
    store.close()
    return len(steps) == len(set(steps))


def test_a_second_resume_while_the_first_loads_its_model_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "race.db"
    run_id = interrupted_run(db)
    second: dict[str, subprocess.CompletedProcess] = {}

    def slow_load(request, err):
        # While this process loads its model, another process resumes the same run.
        command = [sys.executable, "-m", "leafe_tui", "explore", "--resume", str(run_id), "--db", str(db)]
        second["run"] = subprocess.run(command, capture_output=True, text=True, timeout=600)
        return request.model, ScriptedBackend(reply_fn=sokoban_reply)

    monkeypatch.setattr(explore_cmd, "load_backend", slow_load)
    first = invoke("explore", "--resume", str(run_id), "--db", str(db))
    assert first.exit_code == 0, first.output
    other = second["run"]
    assert other.returncode == 2, other.stderr
    assert "still being explored" in other.stderr and "Traceback" not in other.stderr
    assert unique_steps(db, run_id)


def _claim(db: Path, run_id: int, start, done, results) -> None:
    store = Store(db)
    start.wait()
    try:
        store.claim_run(run_id)
        results.put("claimed")
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        results.put(type(exc).__name__)
    done.wait()  # the winner stays alive until every process has tried


def test_processes_claiming_one_run_at_once_get_it_exactly_once(tmp_path: Path) -> None:
    db = tmp_path / "claim.db"
    run_id = interrupted_run(db)
    context = multiprocessing.get_context("fork")
    start, done, results = context.Barrier(4), context.Barrier(4), context.Queue()
    processes = [context.Process(target=_claim, args=(db, run_id, start, done, results)) for _ in range(4)]
    for process in processes:
        process.start()
    outcomes = sorted(results.get(timeout=60) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    assert outcomes == ["RunBusy", "RunBusy", "RunBusy", "claimed"]


def test_a_run_records_its_process_start_and_host(store: Store) -> None:
    from engine.store import process_started

    run_id, _ = store.create_run("path/abc", "path", "m", "scripted", {}, "start")
    run = store.get_run(run_id)
    assert run["host"] == socket.gethostname()
    assert run["pid_started"] and run["pid_started"] == process_started(run["pid"])


@pytest.fixture
def stranger():
    """A live process unrelated to leafe (its pid stands in for a reused one)."""
    process = subprocess.Popen(["sleep", "120"])
    yield process
    process.kill()
    process.wait()


def _owned_by(db: Path, run_id: int, **owner) -> None:
    store = Store(db)
    store.db["runs"].update(run_id, {"status": "running", **owner})
    store.close()


def test_a_reused_pid_does_not_keep_a_run_from_resuming(tmp_path: Path, stranger, loads) -> None:
    db = tmp_path / "reuse.db"
    run_id = interrupted_run(db)
    # The explorer died and its pid now belongs to an unrelated process: the run keeps the host and
    # process start leafe recorded for the explorer, only the pid now names someone else.
    _owned_by(db, run_id, pid=stranger.pid)
    store = Store(db)
    assert store.list_runs()[0]["status"] == "interrupted"
    store.close()
    result = invoke("explore", "--resume", str(run_id), "--db", str(db))
    assert result.exit_code == 0, result.output
    assert loads == [MODEL]


@pytest.mark.parametrize("host", ["this", "elsewhere"])
def test_a_run_that_looks_alive_needs_force(tmp_path: Path, stranger, loads, host: str) -> None:
    from engine.store import process_started

    db = tmp_path / "alive.db"
    run_id = interrupted_run(db)
    # Either a live process here that is (as far as leafe can tell) the explorer, or one on another host.
    owner = socket.gethostname() if host == "this" else "elsewhere"
    _owned_by(db, run_id, pid=stranger.pid, host=owner, pid_started=process_started(stranger.pid))
    refused = invoke("explore", "--resume", str(run_id), "--db", str(db))
    assert refused.exit_code == 2 and "--force" in refused.output, refused.output
    assert loads == []  # refused before the model loads
    forced = invoke("explore", "--resume", str(run_id), "--db", str(db), "--force")
    assert forced.exit_code == 0, forced.output
    store = Store(db)
    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["host"] == socket.gethostname()
    store.close()


def test_force_needs_resume() -> None:
    result = invoke("explore", "sokoban/fixed-1", "--force")
    assert result.exit_code == 2 and "--resume" in result.output


def test_resume_with_another_model_is_refused(tmp_path: Path, loads) -> None:
    db = tmp_path / "model.db"
    run_id = interrupted_run(db)
    result = invoke("explore", "--resume", str(run_id), "--model", "qwen2.5-coder-0.5b", "--db", str(db))
    assert result.exit_code == 2 and f"explored with {MODEL}" in result.output, result.output
    assert loads == []
    store = Store(db)
    assert store.get_run(run_id)["status"] == "interrupted"  # untouched
    store.close()
    same = invoke("explore", "--resume", str(run_id), "--model", MODEL, "--db", str(db))
    assert same.exit_code == 0, same.output


def test_resume_with_an_adapter_the_run_did_not_use_is_refused(tmp_path: Path, loads) -> None:
    db = tmp_path / "adapter.db"
    run_id = interrupted_run(db)
    lora = tmp_path / "lora.gguf"
    lora.write_bytes(b"GGUF")
    result = invoke("explore", "--resume", str(run_id), "--adapter", str(lora), "--db", str(db))
    assert result.exit_code == 2 and "without an adapter" in result.output, result.output
    assert loads == []


def test_resume_with_a_missing_database_creates_no_file(tmp_path: Path, loads) -> None:
    db = tmp_path / "missing.db"
    result = invoke("explore", "--resume", "1", "--db", str(db))
    assert result.exit_code == 2 and "no database" in result.output
    assert not db.exists() and loads == []


def test_a_failed_model_load_gives_the_claim_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "release.db"
    run_id = interrupted_run(db)

    def broken(request, err):
        raise BackendError("no such model file")

    monkeypatch.setattr(explore_cmd, "load_backend", broken)
    result = invoke("explore", "--resume", str(run_id), "--db", str(db))
    assert result.exit_code == 2 and "no such model file" in result.output
    store = Store(db)
    assert store.get_run(run_id)["status"] == "interrupted"
    store.close()


# --- replay with memory addresses -------------------------------------------------------------


class AddressEnv(PathTestEnv):
    """Test double: like PathTestEnv, but its feedback shows a repr with a memory address that is
    different in every process (here: every environment instance), as Python's reprs are."""

    _instances = itertools.count(1)

    def __init__(self) -> None:
        super().__init__()
        self.address = f"0x7f{next(self._instances) * 0x1111:010x}"

    def step(self, action: ParsedAction) -> StepResult:
        result = super().step(action)
        note = f" (got <generator object <genexpr> at {self.address}>)"
        return StepResult(
            result.observation + note,
            result.reward,
            result.done,
            result.success,
            result.valid,
            result.feedback + note,
        )


def test_resume_replays_observations_that_hold_memory_addresses(store: Store) -> None:
    calls = itertools.count()

    def reply(messages: list[dict[str, str]]) -> str:
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        if next(calls) == 2:
            raise KeyboardInterrupt  # killed before its third step
        return act("abc"[step - 1])

    config = ExploreConfig(budget=1, reflect_every=10)
    with pytest.raises(KeyboardInterrupt):
        Explorer(store, ScriptedBackend(reply_fn=reply), AddressEnv(), config).start("path/abc", "m")
    # Resumed "in another process": the same actions give the same text with other addresses.
    run_id = Explorer(store, ScriptedBackend(reply_fn=reply), AddressEnv(), config).resume(1)
    run = store.get_run(run_id)
    assert run["status"] == "finished", run["error"]
    assert [n.step for n in store.nodes(run_id)] == [0, 1, 2, 3]
    assert store.run_totals(run_id)["successes"] == 1
