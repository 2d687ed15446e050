"""Benchmark: llama.cpp builds side by side on this CPU (prompt and decode tokens/s).

Candidates (each a llama-cpp-python wheel; ``--build`` compiles the missing ones, minutes each):

* ``leafe``   the build the set-up chooses: each instruction set this CPU reports, AMX never;
* ``native``  llama-cpp-python's default (``-march=native``), the baseline: the build that segfaults
              on AMX Xeons and that pip's cache carries to other CPUs;
* ``x86-64-v2`` SSE4.2 only: runs on practically any x86-64 CPU, the floor of portability.

Each wheel is unpacked into its own folder and measured in a child process with the same model,
prompt and thread count; the rounds are interleaved (A B C A B C …) so that load on the machine falls
on every candidate alike, and the medians and their ratios to the baseline are reported. Results go
to ``bench/results/llama_builds.json`` with the machine, the settings and the commit.

    .venv/bin/python bench/llama_builds.py --build --model qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine import llama_build
from engine.models import DEFAULT_MODEL, resolve_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "llama_builds.json"
BASELINE = "native"


def candidates() -> dict[str, llama_build.BuildPlan]:
    leafe = llama_build.plan_build(environ={})
    native = llama_build.plan_build(environ={llama_build.CMAKE_ARGS_ENV: "-DGGML_NATIVE=ON"})
    v2 = llama_build.plan_build({"sse4_2"}, environ={})
    return {"leafe": leafe, "native": native, "x86-64-v2": v2}


# The child: load the model from the wheel on PYTHONPATH, time a prompt and a greedy decode.
CHILD = r"""
import json, sys, time
import llama_cpp
model, n_prompt, n_decode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=n_prompt + n_decode + 64, n_threads=threads, verbose=False)
text = " ".join(f"item {i} costs {i * 7 % 13} coins;" for i in range(n_prompt))
tokens = llm.tokenize(text.encode())[:n_prompt]
start = time.perf_counter(); llm.eval(tokens); prompt_s = time.perf_counter() - start
start = time.perf_counter()
for _ in range(n_decode):
    llm.eval([llm.sample(temp=0.0)])
decode_s = time.perf_counter() - start
info = llama_cpp.llama_print_system_info().decode()
print(json.dumps({"prompt_tps": len(tokens) / prompt_s, "decode_tps": n_decode / decode_s, "info": info}))
"""


def unpack(wheel: Path, folder: Path) -> Path:
    target = folder / wheel.parent.name
    if not target.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(target),
                str(wheel),
            ],
            check=True,
        )
    return target


def measure(target: Path, model: Path, args: argparse.Namespace) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), *sys.path[1:]]))
    argv = [
        sys.executable,
        "-c",
        CHILD,
        str(model),
        str(args.prompt_tokens),
        str(args.decode_tokens),
        str(args.threads),
    ]
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:] or ''}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return done.stdout.strip() + ("+dirty" if dirty.strip() else "")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--only", default="", help="comma-separated candidate names (default: all)")
    parser.add_argument("--build", action="store_true", help="compile the candidates whose wheel is missing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=256)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    model = resolve_model(args.model)
    plans = candidates()
    if args.only:
        plans = {name: plans[name] for name in args.only.split(",")}
    build_seconds: dict[str, float | None] = {}
    wheels: dict[str, Path] = {}
    for name, plan in plans.items():
        wheel = llama_build.cached_wheel(plan)
        build_seconds[name] = None
        if wheel is None and args.build:
            print(f"building {name} ({plan.describe()}) …", flush=True)
            started = time.monotonic()
            wheel = llama_build.build_wheel(plan)
            build_seconds[name] = time.monotonic() - started
        if wheel is None:
            print(f"skipping {name}: no wheel (run with --build)")
            continue
        wheels[name] = wheel
    samples: dict[str, list[dict]] = {name: [] for name in wheels}
    with tempfile.TemporaryDirectory(prefix="leafe-bench-") as tmp:
        targets = {name: unpack(wheel, Path(tmp)) for name, wheel in wheels.items()}
        for round_no in range(args.rounds):
            for name, target in targets.items():
                result = measure(target, model, args)
                samples[name].append(result)
                shown = {k: v for k, v in result.items() if k != "info"}
                print(f"round {round_no + 1} {name:10} {json.dumps(shown)}")
    rows = {}
    for name, results in samples.items():
        good = [r for r in results if "error" not in r]
        rows[name] = {
            "plan": plans[name].describe(),
            "key": plans[name].key,
            "prompt_tps": statistics.median(r["prompt_tps"] for r in good) if good else None,
            "decode_tps": statistics.median(r["decode_tps"] for r in good) if good else None,
            "errors": [r["error"] for r in results if "error" in r],
            "build_seconds": build_seconds[name],
            "wheel_mb": round(wheels[name].stat().st_size / 1e6, 1),
            "compiled": sorted(llama_build.compiled_features(good[0]["info"])) if good else [],
        }
    base = rows.get(BASELINE) or next(iter(rows.values()))
    print(
        f"\nmodel {model.name}, {args.prompt_tokens} prompt + {args.decode_tokens} decoded tokens, "
        f"{args.threads} threads, median of {args.rounds} interleaved rounds; CPU {cpu_model()}"
    )
    print(
        f"{'build':12}{'prompt tok/s':>14}{'decode tok/s':>14}"
        f"{'prompt vs native':>18}{'decode vs native':>18}"
    )
    for name, row in rows.items():
        if row["prompt_tps"] is None:
            print(f"{name:12} failed: {row['errors']}")
            continue
        pr = row["prompt_tps"] / base["prompt_tps"] if base["prompt_tps"] else float("nan")
        dr = row["decode_tps"] / base["decode_tps"] if base["decode_tps"] else float("nan")
        print(f"{name:12}{row['prompt_tps']:>14.1f}{row['decode_tps']:>14.1f}{pr:>17.2f}x{dr:>17.2f}x")
    flags = sorted(
        llama_build.cpu_flags() & {f for _, need in llama_build.X86_OPTIONS for f in need}
        | (llama_build.cpu_flags() & {"amx_int8", "amx_tile", "avx512_fp16"})
    )
    report = {
        "bench": "llama_builds",
        "commit": commit(),
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "flags": flags},
        "settings": {k: v for k, v in vars(args).items() if k not in ("build", "only")}
        | {"model": model.name},
        "baseline": BASELINE,
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
