"""The decode check in a child process and ``leafe doctor`` in a healthy and in a broken state.

Children that crash or hang are test doubles: small Python commands that kill themselves with a
signal or sleep, standing in for a llama.cpp built for the wrong CPU.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import doctor, engine_check, llama_build
from engine.models import TEST_MODEL, cached_path
from leafe_tui.cli import app

INFO_LINE = 'print("leafe-system-info " + __import__("json").dumps("CPU : AVX2 = 1 | FMA = 1 |"), flush=True)'


def crashing_child(signal_name: str) -> list[str]:
    """Test double: prints the build's features like the real probe, then dies of a signal."""
    code = f"{INFO_LINE}; import os, signal; os.kill(os.getpid(), signal.{signal_name})"
    return [sys.executable, "-c", code]


def hanging_child() -> list[str]:
    return [sys.executable, "-c", f"{INFO_LINE}; import time; time.sleep(120)"]


def small_model() -> Path:
    path = cached_path(TEST_MODEL)
    if path is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    return path


# --- the decode check ------------------------------------------------------------------------
@pytest.mark.real_model
def test_a_healthy_engine_decodes_in_a_child() -> None:
    result = engine_check.check_decode(small_model())
    assert result.ok, result.detail
    assert result.tokens > 0 and "decoded" in result.detail
    assert llama_build.compiled_features(result.system_info)  # the child reported its build


def test_a_segfaulting_child_is_a_sentence_with_the_fix() -> None:
    result = engine_check.check_decode("model.gguf", argv=crashing_child("SIGSEGV"))
    assert not result.ok
    assert "crashed with SIGSEGV" in result.detail and "make setup" in result.fix
    assert "AVX2 = 1" in result.system_info  # what it printed before dying is kept


def test_an_illegal_instruction_says_the_build_is_for_another_cpu() -> None:
    result = engine_check.check_decode("model.gguf", argv=crashing_child("SIGILL"))
    assert not result.ok and "illegal instruction" in result.detail
    assert "instructions this one lacks" in result.detail


def test_a_hanging_child_is_killed_and_reported() -> None:
    started = time.monotonic()
    result = engine_check.check_decode("model.gguf", timeout_s=1.0, argv=hanging_child())
    assert not result.ok and "did not finish" in result.detail
    assert time.monotonic() - started < 60  # the child was killed, not waited for


def test_a_child_that_fails_reports_its_last_line() -> None:
    argv = [
        sys.executable,
        "-c",
        "import sys; print('ValueError: no such tensor', file=sys.stderr); sys.exit(1)",
    ]
    result = engine_check.check_decode("model.gguf", argv=argv)
    assert not result.ok and "no such tensor" in result.detail


# --- the build finding ----------------------------------------------------------------------
ZEN3 = {"sse4_2", "pni", "ssse3", "avx", "avx2", "fma", "f16c", "bmi2"}


def test_build_for_another_cpu_fails_with_the_rebuild_fix() -> None:
    plan = llama_build.plan_build(ZEN3, machine="x86_64", environ={})
    finding = doctor.check_build(
        "CPU : AVX2 = 1 | AVX512 = 1 |", None, flags=ZEN3, record={"key": "x"}, plan=plan
    )
    assert finding.status == doctor.FAIL and "AVX512" in finding.detail and "lacks" in finding.detail
    amx = doctor.check_build("CPU : AMX_INT8 = 1 |", None, flags=ZEN3 | {"amx_int8"}, record=None, plan=plan)
    assert amx.status == doctor.FAIL and "crash" in amx.detail


def test_build_not_made_by_the_setup_is_a_warning() -> None:
    plan = llama_build.plan_build(ZEN3, machine="x86_64", environ={})
    info = "CPU : SSE3 = 1 | AVX = 1 | AVX2 = 1 | FMA = 1 |"
    assert doctor.check_build(info, None, flags=ZEN3, record=None, plan=plan).status == doctor.WARN
    matching = doctor.check_build(info, None, flags=ZEN3, record={"key": plan.key}, plan=plan)
    assert matching.status == doctor.OK and "AVX2" in matching.detail
    broken = doctor.check_build(None, "ImportError: libllama.so", flags=ZEN3, record=None, plan=plan)
    assert broken.status == doctor.FAIL and "libllama" in broken.detail


# --- the command ----------------------------------------------------------------------------
runner = CliRunner()


@pytest.mark.real_model
def test_doctor_on_a_healthy_machine_exits_0(tmp_path: Path) -> None:
    model = small_model()
    result = runner.invoke(app, ["doctor", "--db", str(tmp_path / "new.db"), "--model", str(model)])
    assert result.exit_code == 0, result.output
    for name in ("llama.cpp", "decode", "models", "sandbox", "training", "database"):
        assert name in result.output
    assert "leafe can run here" in result.output and "✗" not in result.output
    as_json = runner.invoke(
        app, ["doctor", "--json", "--db", str(tmp_path / "new.db"), "--model", str(model)]
    )
    data = json.loads(as_json.stdout)
    assert data["ok"] is True
    decode = next(f for f in data["findings"] if f["name"] == "decode")
    assert decode["status"] == "ok" and decode["data"]["tokens"] > 0


def test_doctor_names_the_fixes_when_the_machine_cannot_run_leafe(tmp_path: Path, monkeypatch) -> None:
    """No model cached, a database of another application, and a llama.cpp that segfaults."""
    monkeypatch.setenv("LEAFE_CACHE_DIR", str(tmp_path / "empty-cache"))
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("create table notes (x)")
    monkeypatch.setattr(engine_check, "probe_argv", lambda model: crashing_child("SIGSEGV"))
    fake_model = tmp_path / "m.gguf"
    fake_model.write_bytes(b"GGUF" + b"\0" * 64)
    result = runner.invoke(app, ["doctor", "--db", str(other), "--model", str(fake_model)])
    assert result.exit_code == 1
    assert "crashed with SIGSEGV" in result.output and "fix:" in result.output
    assert "not a leafe database" in result.output
    assert "no model cached" in result.output and "leafe models pull" in result.output
    assert "cannot run here" in result.output and "Traceback" not in result.output
    with sqlite3.connect(other) as db:  # the doctor only read it
        assert [r[0] for r in db.execute("select name from sqlite_master")] == ["notes"]
    data = json.loads(
        runner.invoke(app, ["doctor", "--json", "--db", str(other), "--model", str(fake_model)]).stdout
    )
    assert data["ok"] is False
    assert {f["name"] for f in data["findings"] if f["status"] == "fail"} >= {"decode", "models", "database"}


def test_setup_check_fails_in_one_line_and_passes_only_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "prefix", str(tmp_path))  # the stamp goes into this "environment"
    fake_model = tmp_path / "m.gguf"
    fake_model.write_bytes(b"GGUF" + b"\0" * 64)
    monkeypatch.setattr(engine_check, "probe_argv", lambda model: crashing_child("SIGSEGV"))
    failed = runner.invoke(app, ["doctor", "--setup", "--model", str(fake_model)])
    assert failed.exit_code == 1
    lines = [line for line in failed.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "SIGSEGV" in lines[0] and "fix:" in lines[0]
    healthy = [
        sys.executable,
        "-c",
        f'{INFO_LINE}; print(\'leafe-decode \' + \'{{"tokens": 3, "text": "x"}}\')',
    ]
    monkeypatch.setattr(engine_check, "probe_argv", lambda model: healthy)
    assert runner.invoke(app, ["doctor", "--setup", "--model", str(fake_model)]).exit_code == 0
    # passed once for this build: a later crash is not looked for again until the build changes
    monkeypatch.setattr(engine_check, "probe_argv", lambda model: crashing_child("SIGSEGV"))
    assert runner.invoke(app, ["doctor", "--setup", "--model", str(fake_model)]).exit_code == 0
