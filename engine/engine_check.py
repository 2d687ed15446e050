"""A real decode of a few tokens, in a child process, so that a llama.cpp that crashes is a sentence.

A llama.cpp compiled for instructions this CPU lacks dies of SIGILL; one with a faulty kernel dies of
SIGSEGV; either takes the whole Python process with it. ``leafe doctor`` and the set-up therefore run
the decode in a child (``python -m engine.engine_check MODEL``), read what it printed, and turn its
exit (a signal, a timeout, an error line) into one sentence with the fix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PROBE_TOKENS = 8
PROBE_PROMPT = "The capital of France is"
DEFAULT_TIMEOUT_S = 300.0  # a 0.5B model loads and decodes in seconds; this is for a loaded machine
_INFO = "leafe-system-info "  # the child's first line: the build's features, before anything can crash
_RESULT = "leafe-decode "  # the child's last line: what it decoded

REBUILD_FIX = "rebuild llama.cpp for this CPU: `make setup` (or `python -m engine.llama_build ensure`)"
NARROW_FIX = (
    "build llama.cpp with fewer CPU features, e.g. "
    "LEAFE_LLAMA_CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON' make setup"
)


@dataclass(frozen=True)
class DecodeCheck:
    """The outcome of one decode in a child process."""

    ok: bool
    detail: str  # one sentence, good or bad
    fix: str | None = None
    system_info: str = ""
    tokens: int = 0
    seconds: float = 0.0
    text: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def probe_argv(model_path: str | Path) -> list[str]:
    return [sys.executable, "-m", "engine.engine_check", str(model_path)]


def check_decode(
    model_path: str | Path,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    argv: list[str] | None = None,
) -> DecodeCheck:
    """Load the model and decode a few tokens in a child; report how it went in one sentence.

    ``argv`` replaces the child command (tests use it to stand in a child that crashes or hangs).
    """
    argv = argv or probe_argv(model_path)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")) if p
    )
    started = time.monotonic()
    child = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,  # a timeout kills the child's whole group
    )
    try:
        out, errout = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(child)
        out, errout = child.communicate()
        info = _system_info(out)
        return DecodeCheck(
            False,
            f"llama.cpp did not finish decoding {PROBE_TOKENS} tokens within {timeout_s:.0f} s",
            "if the machine is busy (another model or training job on every core), retry when it is idle; "
            "otherwise " + NARROW_FIX,
            system_info=info,
        )
    seconds = time.monotonic() - started
    info = _system_info(out)
    code = child.returncode
    if code < 0:
        return _died(-code, info)
    result = _result(out)
    if code != 0 or result is None:
        return DecodeCheck(
            False,
            f"the decode check failed: {_last_line(errout) or f'exit status {code}'}",
            REBUILD_FIX,
            system_info=info,
        )
    tokens = int(result.get("tokens", 0))
    if tokens <= 0:
        return DecodeCheck(
            False, "llama.cpp loaded the model but decoded no token", NARROW_FIX, system_info=info
        )
    return DecodeCheck(
        True,
        f"decoded {tokens} tokens in a child process ({seconds:.1f} s with the model load)",
        system_info=info,
        tokens=tokens,
        seconds=seconds,
        text=str(result.get("text", "")),
    )


def _died(signum: int, info: str) -> DecodeCheck:
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGILL:
        return DecodeCheck(
            False,
            "llama.cpp died of an illegal instruction (SIGILL): it was compiled for a CPU with "
            "instructions this one lacks",
            REBUILD_FIX,
            system_info=info,
        )
    if signum == signal.SIGKILL:
        return DecodeCheck(
            False,
            "the decode check was killed (SIGKILL), most likely for lack of memory",
            "free some memory (or use a smaller model) and retry",
            system_info=info,
        )
    return DecodeCheck(
        False,
        f"llama.cpp crashed with {name} while loading the model or decoding its first tokens",
        f"{REBUILD_FIX}; if it still crashes, {NARROW_FIX}",
        system_info=info,
    )


def _kill_group(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        child.kill()


def _system_info(out: str) -> str:
    for line in out.splitlines():
        if line.startswith(_INFO):
            try:
                return str(json.loads(line[len(_INFO) :]))
            except ValueError:
                return ""
    return ""


def _result(out: str) -> dict | None:
    for line in reversed(out.splitlines()):
        if line.startswith(_RESULT):
            try:
                data = json.loads(line[len(_RESULT) :])
            except ValueError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _probe(model_path: str) -> int:
    """The child: print the build's features, then load the model and decode a few tokens."""
    import llama_cpp

    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    print(_INFO + json.dumps(info), flush=True)  # before anything can crash
    llm = llama_cpp.Llama(
        model_path=model_path, n_ctx=256, n_threads=min(2, os.cpu_count() or 1), verbose=False
    )
    out = llm.create_completion(PROBE_PROMPT, max_tokens=PROBE_TOKENS, temperature=0.0, seed=0)
    text = out["choices"][0]["text"]
    tokens = out["usage"]["completion_tokens"]
    print(_RESULT + json.dumps({"tokens": tokens, "text": text}), flush=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m engine.engine_check MODEL.gguf")
    try:
        sys.exit(_probe(sys.argv[1]))
    except Exception as exc:  # the parent reads this line and reports it
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
