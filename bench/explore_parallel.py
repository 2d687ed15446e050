"""Samples evaluated per minute with N workers: today's sequential engine against the batched
in-process engine and a local llama-cpp-python server, measured side by side in one run.

Each configuration evaluates the same ``--samples`` rollouts of ``--task`` (Pass@k sampling:
temperature 0.7, the grammar on, ``--max-steps`` steps, ``--max-tokens`` per reply) through
``engine.evaluation.run_evaluation``, the code ``leafe eval --workers N`` runs. The sequential
engine (1 worker) is the baseline. Writes ``bench/results/explore_parallel.json`` with machine,
settings and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from engine.evaluation import create_evaluation, run_evaluation
from engine.models import DEFAULT_MODEL, resolve_model
from engine.registry import open_backend, open_env
from engine.rollout import RolloutConfig
from engine.runtime import env_spec_for, model_spec_for, with_workers
from engine.specs import ModelSpec
from engine.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.provenance import commit, machine  # noqa: E402


def evaluate(spec: ModelSpec, workers: int, task: str, samples: int, config: RolloutConfig) -> dict:
    backend = open_backend(with_workers(spec, workers))
    env_spec = env_spec_for(task)
    with tempfile.TemporaryDirectory() as folder:
        store = Store(Path(folder) / "bench.db")
        eval_id = create_evaluation(store, spec, [task], samples, [1], config, {task: env_spec})
        started = time.perf_counter()
        run_evaluation(store, eval_id, backend, {task: open_env(env_spec)}, config, workers=workers)
        seconds = time.perf_counter() - started
        rows = store.eval_samples(eval_id, trajectories=False)
        store.close()
    backend.close()
    tokens = sum(r.generated_tokens for r in rows)
    return {
        "seconds": round(seconds, 1),
        "samples_per_min": round(60 * len(rows) / seconds, 2),
        "generated_tok_per_s": round(tokens / seconds, 1),
        "successes": sum(r.success for r in rows),
    }


def start_server(model: str, threads: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(resolve_model(model))]
    command += ["--model_alias", model, "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "8192"]
    command += ["--n_threads", str(threads), "--verbose", "false"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            urllib.request.urlopen(url + "/v1/models", timeout=2).close()
            return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit("llama_cpp.server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--task", default="sokoban/fixed-1")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--workers", default="2,4,8", help="worker counts for the batched engine")
    parser.add_argument("--out", type=Path, default=Path("bench/results/explore_parallel.json"))
    args = parser.parse_args()
    config = RolloutConfig(temperature=0.7, max_tokens=args.max_tokens, max_steps=args.max_steps, seed=0)
    local = model_spec_for(args.model, n_ctx=4096)
    rows = []

    def measure(engine: str, spec: ModelSpec, workers: int) -> None:
        result = {
            "engine": engine,
            "workers": workers,
            **evaluate(spec, workers, args.task, args.samples, config),
        }
        base = rows[0]["samples_per_min"] if rows else result["samples_per_min"]
        result["vs_sequential"] = round(result["samples_per_min"] / base, 2)
        rows.append(result)
        print(
            f"{engine:<22} workers {workers}: {result['samples_per_min']:6.2f} samples/min "
            f"{result['generated_tok_per_s']:6.1f} tok/s  ({result['vs_sequential']:.2f}x sequential)",
            flush=True,
        )

    measure("sequential (today)", local, 1)
    for workers in [int(w) for w in args.workers.split(",")]:
        measure("batched in-process", local, workers)
    server, url = start_server(args.model, os.cpu_count() or 1)
    try:
        served = model_spec_for(args.model, backend="openai", base_url=url)
        for workers in (1, 4):
            measure("llama-cpp-python server", served, workers)
    finally:
        server.terminate()
        server.wait(timeout=30)

    result = {
        "bench": "explore_parallel",
        "machine": machine(),
        "settings": {
            "model": args.model,
            "task": args.task,
            "samples": args.samples,
            "max_steps": args.max_steps,
            "max_tokens": args.max_tokens,
            "temperature": 0.7,
            "grammar": True,
        },
        "commit": commit(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
