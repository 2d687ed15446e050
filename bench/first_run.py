"""Benchmark: how often does the first `make run` show what LEAFE is about?

For each candidate task and seed, the exploration `make run` starts (same model, same settings) is
run to its end, and we count the runs that show a failed episode, a reflection that rolls back, and
a rollback branch that then succeeds (a recovery), with the time each took. The Makefile's default
task and budget are chosen from these figures, and the README quotes them.

    .venv/bin/python bench/first_run.py --tasks code/humaneval/0 code/suite/digit-collapse --seeds 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.explorer import ExploreConfig, Explorer  # noqa: E402
from engine.registry import open_backend, open_env  # noqa: E402
from engine.runtime import env_spec_for, model_spec_for  # noqa: E402
from engine.store import Store  # noqa: E402


def one_run(store: Store, backend, task: str, config: ExploreConfig, model: str) -> dict:
    started = time.perf_counter()
    run_id = Explorer(store, backend, open_env(env_spec_for(task, None)), config).start(task, model)
    seconds = time.perf_counter() - started
    branches = store.branches(run_id)
    failed = any(b.outcome == "failure" for b in branches)
    rolled_back = any(b.kind == "rollback" for b in branches)
    recovered = any(b.kind == "rollback" and b.outcome == "success" for b in branches)
    return {
        "run": run_id,
        "seconds": round(seconds, 1),
        "failure": failed,
        "rollback": rolled_back,
        "recovered": recovered,
        "successes": sum(b.outcome == "success" for b in branches),
        "steps": store.steps_used(run_id),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--seeds", type=int, default=3, help="runs per task")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=4, help="episodes, as `leafe explore --budget`")
    parser.add_argument("--reflect-every", type=int, default=ExploreConfig.reflect_every)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "first_run.json")
    args = parser.parse_args()
    spec = model_spec_for(args.model)
    backend = open_backend(spec)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "first-run.db")
        for task in args.tasks:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                config = ExploreConfig(budget=args.budget, seed=seed, reflect_every=args.reflect_every)
                row = {"task": task, "seed": seed, **one_run(store, backend, task, config, spec.model)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    backend.close()
    print(f"\nmodel {args.model}, budget {args.budget} episodes, reflect every {args.reflect_every}")
    print(f"{'task':32}{'runs':>6}{'failure':>9}{'rollback':>10}{'recovered':>11}{'median s':>10}")
    summary = {}
    for task in args.tasks:
        mine = [r for r in rows if r["task"] == task]
        seconds = sorted(r["seconds"] for r in mine)
        summary[task] = {
            "runs": len(mine),
            "failure": sum(r["failure"] for r in mine),
            "rollback": sum(r["rollback"] for r in mine),
            "recovered": sum(r["recovered"] for r in mine),
            "median_seconds": seconds[len(seconds) // 2],
        }
        s = summary[task]
        print(
            f"{task:32}{s['runs']:>6}{s['failure']:>9}{s['rollback']:>10}{s['recovered']:>11}"
            f"{s['median_seconds']:>10.0f}"
        )
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    payload = {
        "bench": "first_run",
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit.stdout.strip(),
        "machine": "2-core AMD EPYC (Zen 3), 24 GiB, no GPU",
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "summary": summary,
        "runs": rows,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
