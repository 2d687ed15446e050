"""Benchmark: the same exploration with and without prefix/KV reuse.

Runs the explorer twice on one task with the real llama.cpp engine, once re-evaluating every
prompt from scratch (the baseline) and once reusing the KV prefix across steps and restoring saved
prefixes for branches, and prints prompt tokens evaluated and wall time for both, and the ratios.
Both runs use the same seed; sampling can still diverge slightly between them, so the number of
model calls is printed too. Wall time is only comparable when nothing else loads the machine;
process CPU time is printed beside it because it is less sensitive to other load.

    .venv/bin/python bench/explore_cache.py --model qwen2.5-coder-0.5b --task sokoban/fixed-2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from engine.backends.llama import LlamaCppBackend
from engine.envs import env_for_task
from engine.explorer import ExploreConfig, Explorer
from engine.models import TEST_MODEL, resolve_model
from engine.store import Store


def explore_once(model: Path, task: str, config: ExploreConfig, cache: bool, folder: Path) -> dict:
    backend = LlamaCppBackend(model, reuse_prefix=cache)
    store = Store(folder / f"cache-{cache}.db")
    try:
        started, cpu_started = time.perf_counter(), time.process_time()
        run_id = Explorer(store, backend, env_for_task(task), config).start(task, model.name)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        totals = store.run_totals(run_id)
        branches = sum(1 for b in store.branches(run_id) if b.kind == "rollback" and b.status == "done")
    finally:
        backend.close()
        store.close()
    return {**totals, "wall": wall, "cpu": cpu, "branches": branches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=TEST_MODEL)
    parser.add_argument("--task", default="sokoban/fixed-2")
    parser.add_argument("--budget", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = resolve_model(args.model)
    config = ExploreConfig(budget=args.budget, max_tokens=args.max_tokens, seed=args.seed, grammar=True)
    with tempfile.TemporaryDirectory() as tmp:
        base = explore_once(model, args.task, config, cache=False, folder=Path(tmp))
        reuse = explore_once(model, args.task, config, cache=True, folder=Path(tmp))
    print(
        f"model {model.name}  task {args.task}  budget {args.budget} episodes  max_tokens {args.max_tokens}"
    )
    print(
        f"{'':24}{'calls':>8}{'branches':>10}{'prompt tok':>12}{'evaluated':>12}"
        f"{'generated':>11}{'wall s':>9}{'cpu s':>9}"
    )
    for name, row in (("no reuse (baseline)", base), ("prefix/KV reuse", reuse)):
        print(
            f"{name:24}{row['calls']:>8}{row['branches']:>10}{row['prompt_tokens']:>12}"
            f"{row['evaluated_tokens']:>12}{row['generated_tokens']:>11}{row['wall']:>9.1f}{row['cpu']:>9.1f}"
        )
    token_ratio = base["evaluated_tokens"] / max(reuse["evaluated_tokens"], 1)
    print(f"prompt tokens evaluated: baseline / reuse = {token_ratio:.1f}x")
    print(f"wall time:               baseline / reuse = {base['wall'] / max(reuse['wall'], 1e-9):.1f}x")
    print(f"process CPU time:        baseline / reuse = {base['cpu'] / max(reuse['cpu'], 1e-9):.1f}x")
    print("(the two runs are sequential: wall time is only comparable on an otherwise idle machine)")


if __name__ == "__main__":
    main()
