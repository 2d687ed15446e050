"""A run killed with SIGKILL resumes through `leafe explore --resume`, losing and repeating nothing.

Uses the real CLI, the real llama.cpp engine and SmolLM2 (the smallest real model).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.store import Store

pytestmark = pytest.mark.real_model
pytest.importorskip("llama_cpp")

ARGS = [
    "sokoban/fixed-1",
    "--model",
    "smollm2-135m",
    "--budget",
    "1",
    "--max-tokens",
    "32",
    "--max-thought-chars",
    "12",
    "--reflect-every",
    "4",
]


def leafe(*args: str, db: Path) -> list[str]:
    return [sys.executable, "-m", "leafe_tui", *args, "--db", str(db)]


def committed_steps(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from nodes where step > 0").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_sigkill_then_resume(tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    process = subprocess.Popen(
        leafe("explore", *ARGS, db=db), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while committed_steps(db) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, process.stderr.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()

    store = Store(db)
    run = store.list_runs()[0]
    assert run["status"] == "interrupted"
    before = [(n.id, n.branch_id, n.step, n.raw_response) for n in store.nodes(run["id"])]

    resumed = subprocess.run(
        leafe("explore", "--resume", str(run["id"]), db=db), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr
    after = [(n.id, n.branch_id, n.step, n.raw_response) for n in store.nodes(run["id"])]
    assert after[: len(before)] == before  # nothing committed was lost or rewritten
    steps = [(branch, step) for _, branch, step, _ in after]
    assert len(steps) == len(set(steps))  # no step of a branch was committed twice
    assert store.get_run(run["id"])["status"] == "finished"
    assert store.episodes_used(run["id"]) == 1
    for node in store.nodes(run["id"]):  # the tree is whole: every step hangs off the previous one
        if node.step > 0:
            assert store.node(node.parent_id).step == node.step - 1

    again = subprocess.run(
        leafe("explore", "--resume", str(run["id"]), db=db), capture_output=True, text=True
    )
    assert again.returncode == 2 and "already finished" in again.stderr
