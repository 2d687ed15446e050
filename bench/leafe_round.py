"""One full LEAFE round on this machine, resumable, with its results checked in.

1. Stage-1 ablation on train tasks of a built-in suite: independent sampling, iterative refinement
   and the rollback tree at the same environment-step budget per task (``leafe ablate explore``).
2. Stage-2 ablation (``leafe ablate distill``) on the tree runs of step 1: a rehearsal-only and a
   LEAFE (rehearsal + counterfactual) dataset of the same size, one adapter each with the same
   training settings, then the base model and both adapters evaluated on held-out tasks (Pass@k),
   compared with paired bootstrap intervals.

Every stage is stored in the database and picked up where it stopped: run the same command again
(``--resume`` is accepted and changes nothing). Results go to ``bench/results/leafe_round.json`` after
every stage, with the machine, the settings and the commit.

    .venv/bin/python bench/leafe_round.py            # the defaults below; hours on 2 CPU cores
    .venv/bin/python bench/leafe_round.py --stage 2 --held-out-tasks 4 -n 4 --ks 1,2,4   # the reported one
    .venv/bin/python bench/leafe_round.py --train-tasks 2 --held-out-tasks 1 -n 2 --budget 2  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.provenance import commit, machine  # noqa: E402
from engine.ablation import create_explore_ablation, report, run_explore_ablation, tree_runs  # noqa: E402
from engine.explorer import ExploreConfig  # noqa: E402
from engine.registry import open_backend, open_env  # noqa: E402
from engine.runtime import env_spec_for, model_spec_for  # noqa: E402
from engine.store import Store  # noqa: E402
from engine.suites import suite_tasks  # noqa: E402


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def find_ablation(store: Store, kind: str, settings_key: dict) -> int | None:
    """The stored ablation of this kind whose settings match (so a rerun resumes it)."""
    for ablation in store.ablations():
        if ablation["kind"] == kind and ablation["state"].get("bench_key") == settings_key:
            return ablation["id"]
    return None


def stage_one(store: Store, args: argparse.Namespace, tasks: list[str]) -> int:
    key = {"tasks": tasks, "budget": args.budget, "model": args.model, "seed": args.seed}
    ablation_id = find_ablation(store, "explore", key)
    spec = model_spec_for(args.model, db=store.path)
    if ablation_id is None:
        config = ExploreConfig(seed=args.seed, max_depth=args.max_depth)
        env_specs = {task: env_spec_for(task, None) for task in tasks}
        ablation_id = create_explore_ablation(
            store, tasks, args.budget, config, model_spec=spec, env_specs=env_specs
        )
        store.set_ablation_state(ablation_id, {"bench_key": key})
        log(f"stage 1: ablation {ablation_id} created ({len(tasks)} tasks, budget {args.budget} steps)")
    if store.ablation(ablation_id)["status"] != "finished" and args.stage != "2":
        envs = {task: open_env(env_spec_for(task, None)) for task in tasks}
        backend = open_backend(spec)
        try:
            run_explore_ablation(
                store,
                ablation_id,
                backend,
                envs,
                model=spec.model,
                on_run=lambda s, t, r: log(
                    f"stage 1: {s:<11} {t}: run {r}, {store.run_totals(r)['successes']} ok"
                ),
            )
        finally:
            backend.close()
    return ablation_id


def learn_from(store: Store, explore_id: int, which: str) -> tuple[int, ...]:
    """The Stage-1 runs Stage 2 learns from: the tree's, or those of both strategies that reflect
    (a refine retry is a rollback to step 1, so its recoveries are counterfactual examples too)."""
    if which == "tree":
        return tree_runs(store, explore_id)
    results = report(store, explore_id).results
    return tuple(run for r in results if r.strategy in ("tree", "refine") for run in r.runs)


def write_plot(store: Store, result, path: Path) -> Path:
    """The mean pass@k curves (k = 1 … n) of the base model and both adapters, as an SVG."""
    from engine.evaluation import summarise
    from leafe_tui.pass_plot import write_svg

    curves = []
    for arm in result.arms:
        if arm.eval_id is None:
            continue
        summary = summarise(store, arm.eval_id)
        n = store.evaluation(arm.eval_id)["n"]
        label = {"base": "base model", "reh": "rehearsal only", "leafe": "LEAFE (reh + cf)"}[arm.arm]
        curves.append((label, {k: summary.mean_pass_at(k) for k in range(1, n + 1)}))
    return write_svg(curves, path, title=f"held-out pass@k, {len(result.held_out)} tasks")


def write_results(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=ROOT / "bench" / "work" / "round.db")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "leafe_round.json")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--suite", default="humaneval")
    parser.add_argument("--train-tasks", type=int, default=8, help="first N tasks of the train split")
    parser.add_argument("--held-out-tasks", type=int, default=6, help="first N tasks of the held-out split")
    parser.add_argument("--budget", type=int, default=8, help="environment steps per task and strategy")
    parser.add_argument("--max-depth", type=int, default=3)
    parser.add_argument("-n", "--samples", type=int, default=16)
    parser.add_argument("--ks", default="1,4,16")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stage",
        choices=("1", "2", "all"),
        default="all",
        help="1: the Stage-1 ablation only; 2: Stage 2 from the Stage-1 tasks finished so far; all: both",
    )
    parser.add_argument(
        "--learn-from",
        choices=("tree", "tree+refine"),
        default="tree+refine",
        help="Stage 2's data: the tree runs, or the runs of both reflecting strategies (on HumanEval "
        "with the 0.5B model the tree runs alone recovered nowhere, which leaves no counterfactual)",
    )
    parser.add_argument("--resume", action="store_true", help="accepted for clarity: every run resumes")
    args = parser.parse_args()

    train = suite_tasks(f"{args.suite}:train")[: args.train_tasks]
    held_out = suite_tasks(f"{args.suite}:held-out")[: args.held_out_tasks]
    args.db.parent.mkdir(parents=True, exist_ok=True)
    store = Store(args.db)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "resume"}
    payload: dict = {
        "bench": "leafe_round",
        "machine": machine(),
        "commit": commit(),
        "settings": settings,
        "train_tasks": train,
        "held_out_tasks": held_out,
    }
    explore_id = stage_one(store, args, train)
    payload["stage1"] = report(store, explore_id).as_dict()
    write_results(args.out, payload)
    log(f"stage 1 done: results in {args.out}")
    if args.stage == "1":
        return
    from trainer.distill_ablation import (
        DistillSettings,
        create_distill_ablation,
        report_distill,
        run_distill_ablation,
    )

    distill_settings = DistillSettings(
        runs=learn_from(store, explore_id, args.learn_from),
        held_out=tuple(held_out),
        samples=args.samples,
        ks=tuple(int(k) for k in args.ks.split(",")),
        epochs=args.epochs,
        seed=args.seed,
    )
    key = {"explore": explore_id, "held_out": held_out, "samples": args.samples, "ks": args.ks,
           "epochs": args.epochs, "seed": args.seed, "learn_from": args.learn_from}  # fmt: skip
    distill_id = find_ablation(store, "distill", key)
    if distill_id is None:
        distill_id = create_distill_ablation(store, distill_settings, state={"bench_key": key})
        log(f"stage 2: ablation {distill_id} created")
    run_distill_ablation(store, distill_id, log=log)
    result = report_distill(store, distill_id)
    payload["stage2"] = result.as_dict()
    write_results(args.out, payload)
    plot = write_plot(store, result, args.out.with_suffix(".svg"))
    log(f"stage 2 done: results in {args.out}, the pass@k plot in {plot}")


if __name__ == "__main__":
    main()
