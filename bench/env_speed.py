"""Steps per second of every environment, and what a rollback costs in each (issue 13).

For each environment, on its first listed task, with its own example actions cycled (and the
conformance test's nonsense action among them):
- raw step: steps per second of a fresh episode (the first time each action is seen), after a
  reset (timed on its own);
- reset + replay: seconds to reset and replay ``--steps`` steps (or up to the episode's end), which
  is how the explorer rolls back an environment without snapshots;
- snapshot + restore: seconds to restore a snapshot taken at the same point, where the environment
  takes snapshots (the explorer then skips the replay).

Writes ``bench/results/env_speed.json`` with machine, settings and commit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

from engine.env_check import NONSENSE
from engine.envs import env_names, load_env
from engine.envs.base import ParsedAction

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.provenance import commit, machine  # noqa: E402


def actions_for(env, task: str, count: int) -> list[ParsedAction]:
    examples = env.example_actions(task) or [NONSENSE]
    return [ParsedAction(a) for a in itertools.islice(itertools.cycle([*examples, NONSENSE]), count)]


def measure(name: str, steps: int, repeats: int) -> dict:
    env = load_env(name)
    task = env.tasks()[0].id
    actions = actions_for(env, task, steps)
    env.reset(task)  # the first reset starts whatever the environment runs on (a JVM): not timed
    started = time.perf_counter()
    env.reset(task)
    reset = time.perf_counter() - started
    started = time.perf_counter()
    taken = 0
    for action in actions:
        taken += 1
        if env.step(action).done:
            break
    first = time.perf_counter() - started
    replays = []
    for _ in range(repeats):
        started = time.perf_counter()
        env.reset(task)
        for action in actions[:taken]:
            env.step(action)
        replays.append(time.perf_counter() - started)
    snapshot = env.snapshot()
    restore = None
    if snapshot is not None:
        restores = []
        for _ in range(repeats):
            started = time.perf_counter()
            env.restore(snapshot)
            restores.append(time.perf_counter() - started)
        restore = sorted(restores)[len(restores) // 2]
    close = getattr(env, "close", None)
    if close:
        close()
    replay = sorted(replays)[len(replays) // 2]
    return {
        "env": name,
        "task": task,
        "steps": taken,
        "raw_steps_per_s": round(taken / first, 1),
        "reset_s": round(reset, 4),
        "reset_replay_s": round(replay, 4),
        "snapshot_restore_s": None if restore is None else round(restore, 6),
        "restore_vs_replay": None if not restore else round(replay / restore),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("bench/results/env_speed.json"))
    args = parser.parse_args()
    rows = []
    for name in env_names():
        row = measure(name, args.steps, args.repeats)
        rows.append(row)
        restore = (
            f"restore {row['snapshot_restore_s'] * 1e3:.3f} ms ({row['restore_vs_replay']}x faster)"
            if row["snapshot_restore_s"] is not None
            else "no snapshots"
        )
        print(
            f"{name:<18} {row['raw_steps_per_s']:8.1f} steps/s  reset+replay of {row['steps']:2d} steps "
            f"{row['reset_replay_s'] * 1e3:8.1f} ms  {restore}",
            flush=True,
        )
    result = {
        "bench": "env_speed",
        "machine": machine(),
        "settings": {"steps": args.steps, "repeats": args.repeats},
        "commit": commit(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
