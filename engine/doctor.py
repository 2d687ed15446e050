"""``leafe doctor``: can this machine run leafe? One finding per part, each with the fix when it is not.

Everything that could take the process down (llama.cpp on a CPU it was not built for, a broken torch)
runs in a child process, so the doctor always gets to print its report.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine import engine_check, llama_build

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    name: str
    status: str  # ok, warn (works, with a limitation) or fail (leafe cannot do this part)
    detail: str
    fix: str | None = None
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        return all(f.status != FAIL for f in self.findings)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "findings": [asdict(f) for f in self.findings]}


# ------------------------------------------------------------------------------------ llama.cpp


def _child_json(code: str, timeout_s: float) -> tuple[object, str | None]:
    """Run Python ``code`` in a child that prints one JSON line last: (value, None) or (None, why)."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return None, "it hung"
    if done.returncode < 0:
        return None, f"it was killed by signal {-done.returncode}"
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        return None, lines[-1] if lines else f"exit status {done.returncode}"
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]), None
    except (ValueError, IndexError):
        return None, "it printed nothing readable"


def system_info(timeout_s: float = 60.0) -> tuple[str | None, str | None]:
    """(llama_print_system_info(), None), or (None, why) when llama_cpp cannot even be imported."""
    code = "import llama_cpp, json; print(json.dumps(llama_cpp.llama_print_system_info().decode()))"
    info, problem = _child_json(code, timeout_s)
    return (str(info), None) if problem is None else (None, f"importing llama_cpp: {problem}")


def check_build(
    info: str | None,
    import_problem: str | None,
    *,
    flags: set[str] | None = None,
    record: dict | None = None,
    plan: llama_build.BuildPlan | None = None,
) -> Finding:
    """Is the installed llama.cpp built for this CPU, by leafe's set-up, without the faulty kernels?"""
    flags = llama_build.cpu_flags() if flags is None else flags
    plan = plan or llama_build.plan_build()
    if info is None:
        return Finding(
            "llama.cpp", FAIL, f"llama-cpp-python is not usable: {import_problem}", engine_check.REBUILD_FIX
        )
    compiled = llama_build.compiled_features(info)
    features = " ".join(sorted(f for f in compiled if f in llama_build.SYSTEM_INFO_FLAGS)) or "none"
    data = {
        "system_info": info,
        "compiled": sorted(compiled),
        "plan": plan.key,
        "installed": (record or {}).get("key"),
    }
    bad = llama_build.unsupported_features(compiled, flags) if plan.machine == "x86_64" else []
    if bad:
        missing = [f for f in bad if f not in llama_build.FAULTY_FEATURES]
        why = (
            f"compiled for {', '.join(missing)}, which this CPU lacks"
            if missing
            else f"compiled with ggml's {', '.join(bad)} kernels, which crash on Q4 models"
        )
        return Finding(
            "llama.cpp", FAIL, f"this llama.cpp build is unsafe here: {why}", engine_check.REBUILD_FIX, data
        )
    if record is None:
        return Finding(
            "llama.cpp",
            WARN,
            f"CPU features {features}; installed by pip, not by leafe's set-up (a wheel from pip's cache may "
            "carry a build made for another CPU)",
            "`make setup` installs the build made for this CPU",
            data,
        )
    if record.get("key") != plan.key:
        return Finding(
            "llama.cpp",
            WARN,
            f"built as {record.get('key')}, but this CPU's build is {plan.key}",
            "`make setup` installs the build made for this CPU",
            data,
        )
    return Finding(
        "llama.cpp", OK, f"{llama_build.VERSION}, {plan.describe()}; compiled: {features}", data=data
    )


def check_decode(model: Path | None, *, timeout_s: float = engine_check.DEFAULT_TIMEOUT_S) -> Finding:
    if model is None:
        return Finding(
            "decode",
            FAIL,
            "no model to decode with: none is cached",
            "`leafe models pull smollm2-135m` (98 MB)",
        )
    result = engine_check.check_decode(model, timeout_s=timeout_s)
    status = OK if result.ok else FAIL
    detail = f"{model.name}: {result.detail}" + (
        f", {result.text.strip()!r}…" if result.ok and result.text else ""
    )
    return Finding("decode", status, detail, result.fix, {"model": str(model)} | result.as_dict())


# ------------------------------------------------------------------------------------ the rest


def check_sandbox() -> Finding:
    from engine import sandbox

    try:
        kind = sandbox.sandbox_kind()
        described = sandbox.describe(kind)
    except (ValueError, sandbox.SandboxUnavailable) as exc:
        return Finding("sandbox", FAIL, str(exc), f"unset {sandbox.ENV_VAR} or set it to auto")
    data = {"kind": kind, "protections": list(described.protections), "missing": list(described.missing)}
    if kind == "bwrap" and not described.missing:
        return Finding(
            "sandbox", OK, "bubblewrap: no network, read-only system, private /tmp, limits", data=data
        )
    problem = sandbox.strong_sandbox_problem() if kind != "bwrap" else None
    why = f" (bubblewrap: {problem})" if problem else ""
    missing = "; ".join(described.missing) or "nothing known"
    return Finding(
        "sandbox",
        WARN,
        f"{kind} fallback{why}; {len(described.protections)} protections, missing: {missing}",
        "install bubblewrap (`apt-get install bubblewrap`) for the full sandbox",
        data,
    )


def smallest_cached_model() -> Path | None:
    from engine.models import MODELS, cached_path

    for spec in sorted(MODELS.values(), key=lambda s: s.size):
        path = cached_path(spec)
        if path is not None:
            return path
    return None


def check_models() -> Finding:
    from engine.models import MODELS, cached_path, models_dir

    cached = [name for name in MODELS if cached_path(name) is not None]
    if not cached:
        return Finding(
            "models", FAIL, f"no model cached in {models_dir()}", "`leafe models pull qwen2.5-coder-0.5b`"
        )
    return Finding("models", OK, f"{', '.join(cached)} in {models_dir()}", data={"cached": cached})


_TORCH_PROBE = """
import json
out = {}
try:
    import torch
    out["torch"] = torch.__version__
    out["cuda"] = torch.cuda.is_available()
    out["device"] = torch.cuda.get_device_name(0) if out["cuda"] else None
    out["threads"] = torch.get_num_threads()
    for name in ("transformers", "peft"):
        try:
            out[name] = __import__(name).__version__
        except Exception as exc:
            out[name] = None
    try:
        import bitsandbytes
        out["bitsandbytes"] = bitsandbytes.__version__
    except Exception:
        out["bitsandbytes"] = None
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


def check_training(timeout_s: float = 120.0) -> Finding:
    data, problem = _child_json(_TORCH_PROBE, timeout_s)
    if problem is not None or not isinstance(data, dict):
        return Finding("training", WARN, f"torch could not be checked ({problem})", "`make setup`")
    if "error" in data:
        return Finding(
            "training", WARN, f"Stage 2 unavailable: {data['error']}", "pip install -e '.[train]'", data
        )
    missing = [name for name in ("transformers", "peft") if not data.get(name)]
    if missing:
        return Finding(
            "training",
            WARN,
            f"Stage 2 unavailable: {', '.join(missing)} missing",
            "pip install -e '.[train]'",
            data,
        )
    if data["cuda"]:
        qlora = "QLoRA" if data.get("bitsandbytes") else "LoRA (QLoRA needs `pip install -e '.[qlora]'`)"
        return Finding("training", OK, f"torch {data['torch']}, CUDA on {data['device']}: {qlora}", data=data)
    return Finding(
        "training",
        OK,
        f"torch {data['torch']} on the CPU ({data['threads']} threads): LoRA; QLoRA needs a CUDA GPU",
        data=data,
    )


def check_database(path: Path) -> Finding:
    """Reads the file only (never creates or migrates it)."""
    from engine.store import SCHEMA_VERSION

    if not path.exists():
        folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        if folder is not None and os.access(folder, os.W_OK):
            return Finding("database", OK, f"{path} (created on first use)")
        return Finding(
            "database",
            FAIL,
            f"{path} cannot be created: {folder} is not writable",
            "give --db a writable path or set LEAFE_DB",
        )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            row = db.execute("select value from meta where key = 'schema_version'").fetchone()
            runs = db.execute("select count(*) from runs").fetchone()[0]
    except sqlite3.Error as exc:
        return Finding(
            "database",
            FAIL,
            f"{path} is not a leafe database ({exc})",
            "give --db a leafe database or a new path",
        )
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        return Finding(
            "database", FAIL, f"{path} has schema v{version}, newer than this leafe", "upgrade leafe"
        )
    if not os.access(path, os.W_OK):
        return Finding(
            "database", WARN, f"{path}: {runs} runs, read-only (browsing works, exploring does not)"
        )
    return Finding("database", OK, f"{path}: schema v{version}, {runs} runs")


# --------------------------------------------------------------------------------------- reports


def engine_findings(
    model: Path | None, *, timeout_s: float = engine_check.DEFAULT_TIMEOUT_S
) -> list[Finding]:
    """The build and a real decode: what the set-up checks once per build."""
    info, problem = system_info()
    build = check_build(info, problem, record=llama_build.installed_record())
    if info is None:
        return [build]
    return [build, check_decode(model, timeout_s=timeout_s)]


def diagnose(db: Path, model: Path | None = None) -> Report:
    findings = engine_findings(model or smallest_cached_model())
    findings += [check_models(), check_sandbox(), check_training(), check_database(db)]
    return Report(tuple(findings))


def setup_check(model: Path) -> Report | None:
    """The set-up's check: build and decode, once per installed build; None when already passed."""
    record = llama_build.installed_record() or {}
    stamp = Path(sys.prefix) / llama_build.CHECKED_NAME
    key = {"build": record.get("key"), "model": str(model)}
    try:
        if json.loads(stamp.read_text()) == key:
            return None
    except (OSError, ValueError):
        pass
    report = Report(tuple(engine_findings(model)))
    if report.ok:
        with contextlib.suppress(OSError):  # a read-only environment just checks again next time
            stamp.write_text(json.dumps(key))
    return report
