"""The sandbox's launcher: the first process of every sandboxed run, in both modes.

``engine.sandbox`` passes this file's text to ``python -I -S -c`` with one argument (the run's
configuration, marshalled and hex-encoded: no json, whose import costs more than the rest), inside
bubblewrap or the fallback's namespaces; it imports the module itself only for the probe helpers.
It must stay a single file that needs only the standard library and runs on any Python 3.8+ the
sandbox may use, and import little: it starts once per run. ctypes is imported only where a layer
needs it (Landlock, seccomp, the subreaper).

The launcher forks the program and, in the child, drops to the sandbox uid, starts a session of its
own, sets the rlimits and ``no_new_privs``, then applies Landlock (files, TCP, signals) and a seccomp
filter (sockets, ptrace, io_uring, signals) where asked, and execs the interpreter. The parent is a
child subreaper: every process the program makes stays below it even after ``setsid`` and a double
fork. It enforces the wall clock and a memory total for the whole run (the resident memory of all
the run's processes, sampled), kills every remaining process when the program ends, and reports how
the program ended as one JSON line on ``status_fd``.
"""

from __future__ import annotations

import errno
import marshal
import os
import select
import stat
import sys
import time

try:  # the C module: ``signal`` itself imports enum, functools and collections (5 ms per run)
    import _signal as signal
except ImportError:  # pragma: no cover - another Python implementation
    import signal  # type: ignore[no-redef]

PR_SET_PDEATHSIG = 1
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

# Landlock (include/uapi/linux/landlock.h). The syscall numbers are the same on every architecture.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1, 2, 4, 8
FS_TRUNCATE, FS_IOCTL_DEV = 1 << 14, 1 << 15
FS_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
FS_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
FS_DEVICE = FS_READ_FILE | FS_WRITE_FILE | FS_IOCTL_DEV
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2

# seccomp: the audit architecture and the numbers of the system calls the filter refuses.
_ARCHES = {
    "x86_64": (
        0xC000003E,
        {"socket": 41, "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311,
         "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_getfd": 438,
         "pidfd_send_signal": 424, "kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129,
         "rt_tgsigqueueinfo": 297},
    ),
    "aarch64": (
        0xC00000B7,
        {"socket": 198, "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271,
         "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "pidfd_getfd": 438,
         "pidfd_send_signal": 424, "kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138,
         "rt_tgsigqueueinfo": 240},
    ),
}  # fmt: skip
_DENIED = ("socket", "ptrace", "process_vm_readv", "process_vm_writev", "io_uring_setup", "io_uring_enter",
           "io_uring_register", "pidfd_getfd")  # fmt: skip
_SIGNALLING = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
RET_ALLOW, RET_KILL_PROCESS, RET_EPERM = 0x7FFF0000, 0x80000000, 0x00050000 | errno.EPERM
LD_ABS_W, JEQ_K, JGE_K, RET_K = 0x20, 0x15, 0x35, 0x06

_libc_handle = None


def _libc():  # noqa: ANN202 - ctypes stays unimported until a layer needs it
    global _libc_handle
    if _libc_handle is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.syscall.restype = ctypes.c_long
        libc.prctl.restype = ctypes.c_int
        libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _libc_handle = libc
    return _libc_handle


class _Stop(Exception):
    """SIGTERM from leafe (output cap, shutdown): end the run now."""


def _checked(result: int, what: str) -> int:
    if result < 0:
        import ctypes

        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")
    return result


def _prctl(option: int, arg: int = 0, what: str = "prctl") -> None:
    _checked(_libc().prctl(option, arg, 0, 0, 0), what)


def _syscall(number: int, *args: object) -> int:
    import ctypes

    return _libc().syscall(ctypes.c_long(number), *args)


# ------------------------------------------------------------------------------------------- Landlock


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable."""
    import ctypes

    version = _syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(0, version)


def _fs_rights(abi: int) -> int:
    rights = (1 << 13) - 1  # ABI 1: EXECUTE ... MAKE_SYM
    if abi >= 2:
        rights |= 1 << 13  # REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def apply_landlock(spec: dict) -> None:
    """Allow reading ``read``, everything in ``write``, devices in ``devices``; deny all other files,
    every TCP bind/connect (ABI >= 4), and signals/abstract sockets beyond this domain (ABI >= 6)."""
    import ctypes
    import struct

    abi = int(spec["abi"])
    handled = _fs_rights(abi)
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    size = 8 if abi < 4 else (16 if abi < 6 else 24)
    attr = ctypes.create_string_buffer(struct.pack("=QQQ", handled, net, scoped)[:size], size)
    ruleset = _checked(
        _syscall(SYS_LANDLOCK_CREATE_RULESET, attr, ctypes.c_size_t(size), ctypes.c_uint32(0)),
        "landlock_create_ruleset",
    )
    try:
        rules = [(p, FS_READ) for p in spec.get("read", ())]
        rules += [(p, FS_DEVICE) for p in spec.get("devices", ())]
        rules += [(p, handled) for p in spec.get("write", ())]
        for path, rights in rules:
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a path this machine does not have
            try:
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    rights &= FS_FILE_ONLY
                rule = ctypes.create_string_buffer(struct.pack("=Qi", rights & handled, fd), 12)
                kind = ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH)
                added = _syscall(SYS_LANDLOCK_ADD_RULE, ctypes.c_int(ruleset), kind, rule, ctypes.c_uint32(0))
                _checked(added, f"landlock_add_rule({path})")
            finally:
                os.close(fd)
        _checked(_syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)), "landlock")
    finally:
        os.close(ruleset)


# -------------------------------------------------------------------------------------------- seccomp


def seccomp_arch() -> str | None:
    machine = os.uname().machine.lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    return machine if machine in _ARCHES else None


def seccomp_program(arch: str, restrict_signals: bool, pid: int) -> list[tuple[int, int, int, int]]:
    """A classic-BPF filter: refuse sockets, ptrace, io_uring and foreign-process memory access with
    EPERM; with ``restrict_signals``, signals only to ``pid`` itself or its own process group."""
    audit_arch, numbers = _ARCHES[arch]
    prog = [
        (LD_ABS_W, 0, 0, 4),
        (JEQ_K, 1, 0, audit_arch),
        (RET_K, 0, 0, RET_KILL_PROCESS),
        (LD_ABS_W, 0, 0, 0),
    ]
    if arch == "x86_64":  # x32 system calls would bypass the numbers below
        prog += [(JGE_K, 0, 1, 0x40000000), (RET_K, 0, 0, RET_EPERM)]
    denied = list(_DENIED) + (["pidfd_send_signal"] if restrict_signals else [])
    for name in denied:
        prog += [(JEQ_K, 0, 1, numbers[name]), (RET_K, 0, 0, RET_EPERM)]
    if restrict_signals:
        own, group = pid & 0xFFFFFFFF, (-pid) & 0xFFFFFFFF
        for name in _SIGNALLING:  # the target (pid or tgid) is the low half of the first argument
            prog += [
                (JEQ_K, 0, 6, numbers[name]),
                (LD_ABS_W, 0, 0, 16),
                (JEQ_K, 3, 0, 0),
                (JEQ_K, 2, 0, own),
                (JEQ_K, 1, 0, group),
                (RET_K, 0, 0, RET_EPERM),
                (RET_K, 0, 0, RET_ALLOW),
            ]
    prog.append((RET_K, 0, 0, RET_ALLOW))
    return prog


def apply_seccomp(spec: dict) -> None:
    import ctypes
    import struct

    arch = seccomp_arch()
    if arch is None:
        raise OSError(errno.ENOSYS, f"seccomp filter: unsupported architecture {os.uname().machine}")
    prog = seccomp_program(arch, bool(spec.get("restrict_signals")), os.getpid())
    code = b"".join(struct.pack("=HBBI", *insn) for insn in prog)
    filters = ctypes.create_string_buffer(code, len(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(len(prog), ctypes.addressof(filters))
    _checked(_libc().prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0), "seccomp")


# ---------------------------------------------------------------------------------------- the program


def _count_tasks(uid: int) -> int:
    """Threads of every process of ``uid``: what RLIMIT_NPROC counts against."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                text = f.read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        if int(fields.get("Uid", "-1 0").split()[0]) == uid:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total


def _set_limit(resource, which: int, soft: int, hard: int | None = None) -> None:  # noqa: ANN001
    """Set an rlimit, never above the hard limit leafe itself runs under (which it cannot raise)."""
    current = resource.getrlimit(which)[1]
    hard = soft if hard is None else hard
    if current != resource.RLIM_INFINITY:
        soft, hard = min(soft, current), min(hard, current)
    resource.setrlimit(which, (soft, hard))


def _start_program(cfg: dict, error_w: int) -> None:
    """In the forked child: confine this process, then exec the program. Never returns."""
    try:
        os.setsid()  # own session and group: cannot join the launcher's group to signal it
        uid = cfg.get("uid")
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
        os.chdir(cfg["cwd"])
        limits = cfg["rlimits"]
        import resource

        nproc = int(limits["nproc"])
        if cfg.get("nproc_relative"):  # the uid is shared with the user's other processes
            nproc += _count_tasks(os.getuid())
        cpu = int(limits["cpu"])
        _set_limit(resource, resource.RLIMIT_CPU, cpu, cpu + 1)
        _set_limit(resource, resource.RLIMIT_AS, int(limits["as"]))
        _set_limit(resource, resource.RLIMIT_NPROC, nproc)
        _set_limit(resource, resource.RLIMIT_FSIZE, int(limits["fsize"]))
        _set_limit(resource, resource.RLIMIT_CORE, 0)
        if cfg.get("landlock") or cfg.get("seccomp"):
            _prctl(PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")
        if cfg.get("landlock"):
            apply_landlock(cfg["landlock"])
        if cfg.get("seccomp"):
            apply_seccomp(cfg["seccomp"])
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - report any failure to the launcher, then die
        try:
            os.write(error_w, f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:2000])
        finally:
            os._exit(127)


# ---------------------------------------------------------------------------------------- supervision


class _Run:
    """The processes of the run as /proc shows them (which may be another PID namespace's view).

    ``whole_namespace`` (bwrap): the run owns its PID namespace, whose PID 1 is bwrap's own init:
    every other process in /proc is the run's. Otherwise the run is the tree below this process:
    orphans come back to it, as PID 1 of its namespace (unshare) or as a child subreaper.
    """

    def __init__(self, whole_namespace: bool) -> None:
        self.me = os.readlink("/proc/self")
        self.whole_namespace = whole_namespace
        self.can_kill = self.me == str(os.getpid())  # /proc numbers are ours to signal

    def pids(self) -> list[str]:
        if self.whole_namespace:
            return [p for p in os.listdir("/proc") if p.isdigit() and p not in ("1", self.me)]
        found: list[str] = []
        stack = [self.me]
        while stack:
            pid = stack.pop()
            try:
                tids = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for tid in tids:
                try:
                    with open(f"/proc/{pid}/task/{tid}/children") as f:
                        children = f.read().split()
                except OSError:
                    continue
                found += children
                stack += children
        return found

    def resident_bytes(self) -> int:
        total = 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/statm") as f:
                    total += int(f.read().split()[1]) * _PAGE
            except (OSError, IndexError, ValueError):
                continue
        return total

    def kill_all(self) -> None:
        """SIGKILL every process of the run until none is left. In a PID namespace of its own the
        launcher's exit does that (the kernel kills the rest when PID 1 or bwrap's init ends)."""
        if not self.can_kill or self.whole_namespace:
            return
        end = time.monotonic() + 5
        while time.monotonic() < end:
            _reap()
            pids = self.pids()
            if not pids:
                try:  # children left that /proc no longer lists are dying: wait for them
                    os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    return
                time.sleep(0.002)
                continue
            for pid in pids:
                try:  # noqa: SIM105 - contextlib would cost an import per run
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.001)


_PAGE = os.sysconf("SC_PAGE_SIZE")
_reaped: dict[int, int] = {}


def _reap() -> None:
    """Reap every exited child (as PID 1 or subreaper, orphans too), remembering their statuses."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _reaped[pid] = status


def _on_term(signum: int, frame: object) -> None:
    raise _Stop()


def main() -> None:
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status_fd = int(cfg["status_fd"])
    os.set_inheritable(status_fd, False)
    report: dict = {}
    pid = 0
    run = _Run(bool(cfg.get("whole_namespace")))
    signal.signal(signal.SIGTERM, _on_term)
    try:
        if not cfg.get("whole_namespace") and os.getpid() != 1:  # no PID namespace of our own
            _prctl(PR_SET_CHILD_SUBREAPER, 1, "subreaper")
            _prctl(PR_SET_PDEATHSIG, signal.SIGTERM, "pdeathsig")
        error_r, error_w = os.pipe2(os.O_CLOEXEC)
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.close(error_r)
            _start_program(cfg, error_w)
        os.close(error_w)
        with os.fdopen(error_r, "rb") as f:
            setup_error = f.read().decode("utf-8", "replace")  # EOF as soon as the exec succeeded
        if setup_error:
            report["error"] = setup_error
        report.update(_supervise(cfg, pid, run, started))
    except _Stop:
        report["reason"] = "stopped"
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if pid > 0 and pid not in _reaped:  # our own unreaped child: its pid cannot have been reused
            try:
                os.kill(pid, signal.SIGKILL)
                _reaped[pid] = os.waitpid(pid, 0)[1]
            except OSError:
                pass
        run.kill_all()
        _reap()
        status = _reaped.get(pid) if pid else None
        if status is not None:
            if os.WIFSIGNALED(status):
                report["signal"] = os.WTERMSIG(status)
            else:
                report["exit"] = os.WEXITSTATUS(status)
        os.write(status_fd, marshal.dumps(report, 2).hex().encode() + b"\n")
    os._exit(0)


def _supervise(cfg: dict, pid: int, run: _Run, started: float) -> dict:
    deadline = started + float(cfg["wall_seconds"])
    total = cfg.get("memory_total")
    interval = float(cfg.get("poll_seconds", 0.01))
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    try:
        while True:
            _reap()
            if pid in _reaped:
                return {}
            now = time.monotonic()
            if now >= deadline:
                return {"reason": "wall-time"}
            if total and run.resident_bytes() > total:
                return {"reason": "memory"}
            wait = min(interval, deadline - now)
            if pidfd is not None:
                select.select([pidfd], [], [], wait)
            else:
                time.sleep(wait)
    finally:
        if pidfd is not None:
            os.close(pidfd)


if __name__ == "__main__":
    main()
