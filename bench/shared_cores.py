"""Benchmark: two leafe model processes at once, with and without sharing the cores.

Each worker is a separate process that loads the model with the real llama.cpp backend and
generates the same tokens (greedy, fixed prompts). Three ways to run two workers, side by side in
one run:
- ``one after the other``: the baseline (each has the machine to itself);
- ``at once, shared``: leafe's default, each model re-reads its fair share of the cores
  (engine/cores.py) before every call;
- ``at once, all cores each``: what leafe did before (every model took every core).
It prints the wall time of the pair and the generated tokens per second of each worker.

    .venv/bin/python bench/shared_cores.py --model qwen2.5-coder-0.5b --calls 3 --tokens 96
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKER = """
import json, sys, time
from engine.backends.llama import LlamaCppBackend
from engine.models import resolve_model
model, calls, tokens, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n_threads = int(threads) if threads != "share" else None
backend = LlamaCppBackend(resolve_model(model), n_ctx=1024, n_threads=n_threads, reuse_prefix=False)
generated, started = 0, time.perf_counter()
for i in range(calls):
    ask = f"Write a Python function number {i} that sorts a list, with comments."
    messages = [{"role": "user", "content": ask}]
    generated += backend.complete(messages, temperature=0.0, max_tokens=tokens, seed=i).generated_tokens
seconds = time.perf_counter() - started
backend.close()
print(json.dumps({"generated": generated, "seconds": seconds}))
"""


def worker(model: str, calls: int, tokens: int, threads: str, cores_dir: str) -> subprocess.Popen:
    env = {**os.environ, "LEAFE_CORES_DIR": cores_dir, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, model, str(calls), str(tokens), threads],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def finish(process: subprocess.Popen, timeout: float) -> dict:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"generated": 0, "seconds": timeout, "timed_out": True}
    return json.loads(out.strip().splitlines()[-1])


def pair(model: str, calls: int, tokens: int, threads: str, at_once: bool, timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as cores_dir:
        started = time.perf_counter()
        if at_once:
            processes = [worker(model, calls, tokens, threads, cores_dir) for _ in range(2)]
            results = [finish(p, timeout) for p in processes]
        else:
            results = [finish(worker(model, calls, tokens, threads, cores_dir), timeout) for _ in range(2)]
        wall = time.perf_counter() - started
    rates = [r["generated"] / r["seconds"] if r["seconds"] else 0.0 for r in results]
    return {"wall_s": round(wall, 1), "tok_s": [round(r, 2) for r in rates], "workers": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-0.5b")
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--timeout", type=float, default=300.0, help="per worker; a slower one is cut off")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "shared_cores.json")
    args = parser.parse_args()
    cores = str(len(os.sched_getaffinity(0)))
    cases = {
        "one after the other": pair(args.model, args.calls, args.tokens, "share", False, args.timeout),
        "at once, shared (leafe)": pair(args.model, args.calls, args.tokens, "share", True, args.timeout),
        "at once, all cores each (before)": pair(
            args.model, args.calls, args.tokens, cores, True, args.timeout
        ),
    }
    base = cases["one after the other"]["wall_s"]
    print(f"model {args.model}, {args.calls} calls × {args.tokens} tokens per worker, {cores} cores")
    print(f"{'':36}{'wall s':>9}{'× baseline':>12}   tok/s per worker")
    for name, case in cases.items():
        cut = " (cut off at the timeout)" if any(w.get("timed_out") for w in case["workers"]) else ""
        print(f"{name:36}{case['wall_s']:>9.1f}{case['wall_s'] / base:>12.2f}   {case['tok_s']}{cut}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    payload = {
        "bench": "shared_cores",
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit.stdout.strip(),
        "machine": {"cores": int(cores), "python": platform.python_version(), "cpu": platform.processor()},
        "settings": vars(args) | {"out": str(args.out)},
        "cases": cases,
    }
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
