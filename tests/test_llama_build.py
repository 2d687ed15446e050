"""Which llama.cpp build a CPU gets, the wheel cache keyed by it, and ``ensure`` in a real venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from engine import llama_build
from engine.llama_build import BuildPlan, plan_build

ROOT = Path(__file__).resolve().parent.parent
# /proc/cpuinfo flags of the Xeon on which the native build segfaulted (issue 8), and of two others.
XEON_AMX = {
    *("fpu", "sse", "sse2", "ssse3", "sse4_1", "sse4_2", "pni", "avx", "f16c", "fma", "bmi2", "avx2"),
    *("avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw", "avx512vbmi", "avx512_vnni", "avx512_bf16"),
    *("avx512_fp16", "avx_vnni", "amx_bf16", "amx_int8", "amx_tile"),
}
ZEN3 = {
    "fpu",
    "sse",
    "sse2",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "pni",
    "avx",
    "f16c",
    "fma",
    "bmi2",
    "avx2",
    "sha_ni",
}
OLD_X86_64 = {"fpu", "sse", "sse2"}


def _args(plan: BuildPlan) -> dict[str, str]:
    return dict(arg.removeprefix("-D").split("=", 1) for arg in plan.cmake_args)


def test_amx_xeon_gets_avx512_but_never_amx_nor_native() -> None:
    args = _args(plan_build(XEON_AMX, machine="x86_64", environ={}))
    assert args["GGML_NATIVE"] == "OFF"
    assert all(args[o] == "ON" for o in ("GGML_AVX512", "GGML_AVX512_VNNI", "GGML_AVX512_BF16", "GGML_AVX2"))
    assert all(args[o] == "OFF" for o in llama_build.X86_NEVER)


def test_each_option_only_where_the_cpu_reports_it() -> None:
    args = _args(plan_build(ZEN3, machine="x86_64", environ={}))
    assert args["GGML_AVX2"] == "ON" and args["GGML_FMA"] == "ON"
    assert args["GGML_AVX512"] == "OFF" and args["GGML_AVX_VNNI"] == "OFF"
    old = plan_build(OLD_X86_64, machine="x86_64", environ={})
    assert old.options == () and _args(old)["GGML_AVX"] == "OFF" and _args(old)["GGML_SSE42"] == "OFF"
    # AVX-512 sub-features without AVX-512F are never switched on alone
    assert "GGML_AVX512_VNNI" not in llama_build.x86_options({"avx512_vnni", "avx2"})


def test_the_wheel_key_is_the_feature_set() -> None:
    same = plan_build(ZEN3 | {"sha_ni", "rdrand"}, machine="AMD64", environ={})
    assert plan_build(ZEN3, machine="x86_64", environ={}).key == same.key
    keys = {plan_build(f, machine="x86_64", environ={}).key for f in (XEON_AMX, ZEN3, OLD_X86_64)}
    assert len(keys) == 3
    custom = plan_build(ZEN3, machine="x86_64", environ={llama_build.CMAKE_ARGS_ENV: "-DGGML_AVX2=OFF"})
    assert custom.custom and custom.key not in keys and "-DGGML_AVX2=OFF" in custom.cmake_args


def test_pinned_version_matches_pyproject() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"{llama_build.PACKAGE}=={llama_build.VERSION}" in deps


def test_a_cached_wheel_never_reaches_another_cpu(tmp_path: Path) -> None:
    zen = plan_build(ZEN3, machine="x86_64", environ={})
    xeon = plan_build(XEON_AMX, machine="x86_64", environ={})
    folder = llama_build.wheel_dir(xeon, tmp_path)
    folder.mkdir(parents=True)
    (folder / f"llama_cpp_python-{llama_build.VERSION}-cp311-cp311-linux_x86_64.whl").write_bytes(b"x")
    assert llama_build.cached_wheel(xeon, tmp_path) is not None
    assert llama_build.cached_wheel(zen, tmp_path) is None


def test_unsupported_features_names_what_the_cpu_lacks_and_amx() -> None:
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 |"
    compiled = llama_build.compiled_features(info)
    assert {"AVX512", "AMX_INT8", "REPACK"} <= compiled
    assert llama_build.unsupported_features(compiled, ZEN3) == ["AMX_INT8", "AVX512", "AVX512_VNNI"]
    assert llama_build.unsupported_features(compiled, XEON_AMX) == ["AMX_INT8"]
    assert llama_build.unsupported_features({"AVX", "AVX2", "FMA"}, ZEN3) == []


def test_the_installed_build_runs_on_this_cpu() -> None:
    pytest.importorskip("llama_cpp")
    import llama_cpp

    compiled = llama_build.compiled_features(llama_cpp.llama_print_system_info().decode())
    assert compiled, "llama_print_system_info reported no features"
    if llama_build.plan_build().machine == "x86_64":
        assert llama_build.unsupported_features(compiled, llama_build.cpu_flags()) == []


def _installed_wheel() -> Path:
    record = llama_build.installed_record()
    wheel = Path(record["wheel"]) if record else None
    if wheel is None or not wheel.is_file():
        pytest.skip("llama-cpp-python was not installed by `make` (no leafe-built wheel to reuse)")
    return wheel


def test_ensure_replaces_a_build_for_another_cpu_and_then_does_nothing(tmp_path: Path) -> None:
    """In a real venv: a record of another CPU's build is replaced by this CPU's cached wheel."""
    wheel = _installed_wheel()
    plan = plan_build()
    cache = tmp_path / "cache"
    llama_build.wheel_dir(plan, cache).mkdir(parents=True)
    shutil.copy(wheel, llama_build.wheel_dir(plan, cache) / wheel.name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    (venv / llama_build.RECORD_NAME).write_text(json.dumps({"key": "0.3.36-cpython-311-x86_64-avx512"}))
    env = dict(os.environ, LEAFE_CACHE_DIR=str(cache), PYTHONPATH=str(ROOT), PIP_NO_INDEX="1")
    env.pop(llama_build.CMAKE_ARGS_ENV, None)
    first = subprocess.run(
        [python, "-m", "engine.llama_build", "ensure"], env=env, capture_output=True, text=True
    )
    assert first.returncode == 0, first.stderr
    assert "installing the llama.cpp build for this CPU" in first.stdout
    record = json.loads((venv / llama_build.RECORD_NAME).read_text())
    assert record["key"] == plan.key
    listed = subprocess.run([python, "-m", "pip", "show", "llama-cpp-python"], capture_output=True, text=True)
    assert f"Version: {llama_build.VERSION}" in listed.stdout
    again = subprocess.run(
        [python, "-m", "engine.llama_build", "ensure"], env=env, capture_output=True, text=True
    )
    assert again.returncode == 0 and again.stdout == ""
