"""Which llama.cpp build this machine gets, and getting it.

llama-cpp-python has no CPU wheel on PyPI: pip compiles llama.cpp from the sdist, by default with
``GGML_NATIVE`` (``-march=native``). Two things go wrong with that:

* on Xeons with AMX (Sapphire Rapids and later), a native build turns on ggml's AMX kernels, and
  their matrix multiply segfaults on the first decode of Q4 models (llama.cpp issue #20824; the same
  crash made ollama and dspy drop their AMX CPU variant). AVX-512 itself is fine;
* pip caches the wheel it built under the sdist's name, not the CPU, so a wheel built natively on one
  machine is silently installed on another whose CPU lacks some of its instructions.

So leafe builds the wheel itself, with ``GGML_NATIVE=OFF`` and each instruction-set option switched
on only when this CPU reports it (AMX never), bypassing pip's cache, and keeps it in its own cache
under a key made of exactly those options. A wheel is therefore only ever installed on a CPU that has
every instruction it was compiled for, and on this CPU it is as fast as a native build (decoding is
memory-bound; ``bench/llama_builds.py`` measures the candidates side by side).

This module runs before leafe is installed (``python -m engine.llama_build ensure`` from the
Makefile), so it uses the standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

PACKAGE = "llama-cpp-python"
VERSION = "0.3.36"  # pinned in pyproject.toml too; tests/test_llama_build.py checks they agree
CMAKE_ARGS_ENV = "LEAFE_LLAMA_CMAKE_ARGS"  # a user's own build options replace the plan
RECORD_NAME = "leafe-llama-build.json"  # in the virtual environment: which build is installed
CHECKED_NAME = "leafe-llama-checked.json"  # in the virtual environment: builds whose decode passed

# ggml option -> the /proc/cpuinfo flags that must all be present to switch it on.
X86_OPTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("GGML_SSE42", ("sse4_2",)),
    ("GGML_AVX", ("avx",)),
    ("GGML_F16C", ("f16c",)),
    ("GGML_FMA", ("fma",)),
    ("GGML_BMI2", ("bmi2",)),
    ("GGML_AVX2", ("avx2",)),
    ("GGML_AVX_VNNI", ("avx_vnni",)),
    ("GGML_AVX512", ("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw")),
    ("GGML_AVX512_VBMI", ("avx512f", "avx512vbmi")),
    ("GGML_AVX512_VNNI", ("avx512f", "avx512_vnni")),
    ("GGML_AVX512_BF16", ("avx512f", "avx512_bf16")),
)
# Never on, whatever the CPU says: ggml's AMX matrix multiply segfaults on Q4 models.
X86_NEVER = ("GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")
# The x86 features llama_print_system_info() reports -> the /proc/cpuinfo flag each one needs.
SYSTEM_INFO_FLAGS = {
    "SSE3": "pni",
    "SSSE3": "ssse3",
    "AVX": "avx",
    "AVX_VNNI": "avx_vnni",
    "AVX2": "avx2",
    "F16C": "f16c",
    "FMA": "fma",
    "BMI2": "bmi2",
    "AVX512": "avx512f",
    "AVX512_VBMI": "avx512vbmi",
    "AVX512_VNNI": "avx512_vnni",
    "AVX512_BF16": "avx512_bf16",
    "AMX_INT8": "amx_int8",
}
FAULTY_FEATURES = ("AMX_INT8",)  # reported by a build with ggml's AMX kernels, which crash
# Not needed by leafe and a large part of the compile: the multimodal library.
COMMON_ARGS = ("-DLLAVA_BUILD=OFF",)


class BuildError(Exception):
    """The llama.cpp wheel could not be built or installed; the message says what to do."""


@dataclass(frozen=True)
class BuildPlan:
    """How llama.cpp is compiled for one kind of CPU, and the key its wheel is cached under."""

    version: str
    machine: str
    python_tag: str
    options: tuple[str, ...]  # ggml options switched on ("native" where the plan is a native build)
    cmake_args: tuple[str, ...]
    custom: bool = False

    @property
    def key(self) -> str:
        if self.custom:
            # a user's own options may include -march=native: such a wheel stays with this CPU too
            digest = hashlib.sha256(" ".join(self.cmake_args).encode()).hexdigest()[:10]
            tail = f"custom-{digest}-{cpu_fingerprint()}"
        elif self.options == ("native",):
            tail = "native-" + cpu_fingerprint()
        else:
            tail = ".".join(o.removeprefix("GGML_").lower() for o in self.options) or "generic"
        return f"{self.version}-{self.python_tag}-{self.machine}-{tail}"

    def describe(self) -> str:
        if self.custom:
            return f"custom options from ${CMAKE_ARGS_ENV}: {' '.join(self.cmake_args)}"
        if self.options == ("native",):
            return f"native build for this {self.machine} CPU"
        names = [o.removeprefix("GGML_") for o in self.options]
        return "x86-64 with " + (", ".join(names) if names else "no extensions") + " (AMX off)"


# ------------------------------------------------------------------------------------------ the plan


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The feature flags of this CPU as Linux reports them (empty where /proc/cpuinfo is missing)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_fingerprint() -> str:
    """A short hash of this CPU's model and flags: native builds are reused only on an identical CPU."""
    text = " ".join(sorted(cpu_flags())) + "|" + platform.processor() + "|" + platform.machine()
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def x86_options(flags: set[str]) -> tuple[str, ...]:
    """The ggml instruction-set options a build for a CPU with these flags may switch on."""
    chosen: list[str] = []
    for option, needed in X86_OPTIONS:
        if all(flag in flags for flag in needed):
            chosen.append(option)
    return tuple(chosen)


def plan_build(
    flags: set[str] | None = None,
    *,
    machine: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> BuildPlan:
    """The build for this machine (or for the given CPU flags and machine, for tests and benches)."""
    environ = os.environ if environ is None else environ
    machine = (machine or platform.machine()).lower()
    machine = {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    python_tag = sys.implementation.cache_tag or "py"
    custom = environ.get(CMAKE_ARGS_ENV, "").split()
    if custom:
        return BuildPlan(VERSION, machine, python_tag, (), tuple(custom) + COMMON_ARGS, custom=True)
    if machine != "x86_64":
        # Other architectures keep llama.cpp's own detection; the key pins the wheel to this CPU.
        return BuildPlan(VERSION, machine, python_tag, ("native",), ("-DGGML_NATIVE=ON",) + COMMON_ARGS)
    options = x86_options(cpu_flags() if flags is None else flags)
    args = ["-DGGML_NATIVE=OFF"]
    for option, _ in X86_OPTIONS:
        args.append(f"-D{option}={'ON' if option in options else 'OFF'}")
    args += [f"-D{option}=OFF" for option in X86_NEVER]
    return BuildPlan(VERSION, machine, python_tag, options, tuple(args) + COMMON_ARGS)


def compiled_features(system_info: str) -> set[str]:
    """The CPU features a llama.cpp build was compiled with, from ``llama_print_system_info()``."""
    return {m.group(1) for m in re.finditer(r"\b([A-Z0-9_]+) = 1\b", system_info)}


def unsupported_features(compiled: set[str], flags: set[str]) -> list[str]:
    """Compiled features this CPU cannot run, then those known to crash (AMX), in a stable order."""
    missing = [f for f in sorted(compiled) if f in SYSTEM_INFO_FLAGS and SYSTEM_INFO_FLAGS[f] not in flags]
    return missing + [f for f in FAULTY_FEATURES if f in compiled and f not in missing]


# ---------------------------------------------------------------------------------------- the cache


def build_cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """Where leafe's own caches live: $LEAFE_CACHE_DIR, else the XDG cache folder."""
    environ = os.environ if environ is None else environ
    if environ.get("LEAFE_CACHE_DIR"):
        return Path(environ["LEAFE_CACHE_DIR"]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "leafe"


def wheel_dir(plan: BuildPlan, root: Path | None = None) -> Path:
    return (root or build_cache_root()) / "wheels" / plan.key


def cached_wheel(plan: BuildPlan, root: Path | None = None) -> Path | None:
    folder = wheel_dir(plan, root)
    wheels = sorted(folder.glob("llama_cpp_python-*.whl")) if folder.is_dir() else []
    return wheels[0] if wheels else None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Two set-ups at once (make run and make test) build the wheel only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build_wheel(plan: BuildPlan, *, python: str = sys.executable, root: Path | None = None) -> Path:
    """Compile llama-cpp-python for the plan (never from pip's cache) and keep the wheel under its key."""
    folder = wheel_dir(plan, root)
    with _locked(folder.with_name(folder.name + ".lock")):
        found = cached_wheel(plan, root)
        if found:
            return found
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{plan.key}-", dir=folder.parent))
        env = dict(os.environ)
        env["CMAKE_ARGS"] = " ".join(plan.cmake_args)
        env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
        argv = [
            python, "-m", "pip", "wheel", "--no-cache-dir", "--no-deps",
            "--no-binary", PACKAGE, f"{PACKAGE}=={VERSION}", "-w", str(work),
        ]  # fmt: skip
        try:
            done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            wheels = list(work.glob("llama_cpp_python-*.whl"))
            if done.returncode != 0 or not wheels:
                log = work.parent / f"{plan.key}.build.log"
                log.write_text(done.stdout)
                raise BuildError(
                    f"compiling llama.cpp failed (log: {log}); it needs a C/C++ compiler and CMake"
                )
            (work / "plan.json").write_text(json.dumps(asdict(plan) | {"key": plan.key}, indent=2))
            if folder.exists():
                shutil.rmtree(folder)
            work.rename(folder)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    found = cached_wheel(plan, root)
    assert found is not None
    return found


# ------------------------------------------------------------------------ the virtual environment


def installed_record(prefix: Path | None = None) -> dict | None:
    """What ``ensure`` installed into this environment (None when it did not, or llama_cpp is gone)."""
    prefix = Path(sys.prefix if prefix is None else prefix)
    try:
        record = json.loads((prefix / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _llama_cpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


def ensure(*, prefix: Path | None = None, root: Path | None = None, say=print) -> BuildPlan:
    """Install the llama.cpp wheel that is right for this CPU into this environment, building it once.

    A no-op when the environment already holds the build planned for this CPU; anything else (no
    llama_cpp, a build pip made on its own, a build made for another CPU) is replaced.
    """
    prefix = Path(sys.prefix if prefix is None else prefix)
    plan = plan_build()
    record = installed_record(prefix)
    if record and record.get("key") == plan.key and _llama_cpp_installed():
        return plan
    wheel = cached_wheel(plan, root)
    if wheel is None:
        say(f"leafe: compiling llama.cpp for this CPU ({plan.describe()}); once per kind of CPU, minutes")
        wheel = build_wheel(plan, root=root)
    else:
        say(f"leafe: installing the llama.cpp build for this CPU ({plan.describe()}) from {wheel.parent}")
    argv = [
        sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-cache-dir",
        "--force-reinstall", str(wheel),
    ]  # fmt: skip
    if subprocess.run(argv).returncode != 0:
        raise BuildError(f"pip could not install {wheel}")
    (prefix / CHECKED_NAME).unlink(missing_ok=True)
    record = asdict(plan) | {"key": plan.key, "wheel": str(wheel), "description": plan.describe()}
    (prefix / RECORD_NAME).write_text(json.dumps(record, indent=2) + "\n")
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.llama_build", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    sub.add_parser("plan", help="print the build this CPU gets, as JSON")
    sub.add_parser("ensure", help="install the right llama.cpp build into this environment")
    args = parser.parse_args(argv)
    if args.verb == "plan":
        plan = plan_build()
        print(json.dumps(asdict(plan) | {"key": plan.key, "description": plan.describe()}, indent=2))
        return 0
    try:
        ensure()
    except BuildError as exc:
        print(f"leafe: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
