"""Judging a function against check code that the function can neither read nor fool.

HumanEval's own harness runs ``check(candidate)`` in the candidate's process, so a program can print
a forged verdict, read the hidden asserts from its input, or return an object whose ``__eq__`` always
says yes. Here the two never share a process:

* the **candidate** runs in the sandbox (``CANDIDATE_HARNESS``): it loads the prompt and the
  submitted code, then evaluates a batch of calls, given as plain-data arguments, and writes each
  result back as plain data (``plain_data``). It never sees the check code, only the arguments;
* the **checker** is a separate, trusted Python process (``CHECKER``) that runs the check code with
  ``candidate`` bound to a proxy. The proxy answers from the results the sandbox returned, decoded
  into fresh plain values, so every comparison is made by the checker on data the candidate could not
  have given behaviour to. The verdict is whatever the check code does in that process: the
  candidate has no channel to it except plain return values.

A check's calls are not known in advance, so the checker first runs the check in *discovery* mode:
asserts turned into plain expressions (their calls are made, their failures ignored), unknown calls
recorded and answered with an inert ``PENDING`` placeholder so that
the check runs on to its later calls. The recorded calls go to the sandbox in one batch; then the
checker runs again. When a pass meets no unknown call, a last pass with asserts on gives the verdict.
Discovery only decides how many rounds it takes (usually one batch); the verdict pass sees real
values only. ``random`` is reseeded before every pass, so a check that draws random inputs asks for
the same calls each time.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

from engine import sandbox
from engine.envs import plain_data
from engine.sandbox import Limits, RunResult

MAX_ROUNDS = 8
_CODEC = inspect.getsource(plain_data)

# ------------------------------------------------------------------------------------- the candidate

# Runs in the sandbox as the main program. Loads prompt.py then solution.py into one namespace,
# reads its batch of calls from stdin only after that, and writes JSON lines to the original stdout;
# the candidate's own prints go to /dev/null (or to a capture buffer for doctest examples).
CANDIDATE_HARNESS = (
    _CODEC
    + r"""
import contextlib, io, os, sys, traceback

ENTRY = @ENTRY@
_results = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
_HIDE = {os.path.abspath(__file__), "<leafe>"}
_CAP = 2000


def emit(**record):
    _results.write(json.dumps(record) + "\n")
    _results.flush()


def tail(exc):
    te = traceback.TracebackException.from_exception(exc)
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename not in _HIDE])
    return "".join(te.format()).replace(os.getcwd().rstrip("/") + "/", "")[-4000:]


def clip(text):
    return text if len(text) <= _CAP else text[:_CAP] + "..."


def show(value):
    try:
        return clip(repr(value))
    except BaseException as exc:
        return "<repr() failed: %s>" % type(exc).__name__


def run_file(name, ns):
    path = os.path.abspath(name)
    with open(path, encoding="utf-8") as handle:
        exec(compile(handle.read(), path, "exec"), ns)


def main():
    ns = {"__name__": "solution", "__builtins__": __builtins__}
    try:
        run_file("prompt.py", ns)
    except BaseException:
        pass
    stub = ns.get(ENTRY)
    try:
        run_file("solution.py", ns)
    except BaseException as exc:
        emit(event="load_error", error=tail(exc))
        return
    candidate = ns.get(ENTRY)
    if not callable(candidate) or candidate is stub:
        emit(event="missing")
        return
    try:
        spec = json.loads(sys.stdin.read())
    except BaseException:
        emit(event="no_spec")
        return
    emit(event="loaded")
    if spec["mode"] == "doctest":
        for i, call in enumerate(spec["calls"]):
            emit(event="start", i=i)
            buf = io.StringIO()
            try:
                with contextlib.redirect_stdout(buf):
                    try:
                        code = compile(call, "<leafe>", "eval")
                    except SyntaxError:
                        code = compile(call, "<leafe>", "exec")
                    value = eval(code, ns)
            except BaseException as exc:
                printed = clip(buf.getvalue())
                emit(event="error", i=i, type=type(exc).__name__, error=tail(exc), printed=printed)
                continue
            shown = None if value is None else show(value)
            emit(event="value", i=i, printed=clip(buf.getvalue()), repr=shown)
        return
    for i, key in enumerate(spec["calls"]):
        args, kwargs = (decode_plain(part) for part in json.loads(key))
        emit(event="start", i=i)
        try:
            value = candidate(*args, **kwargs)
        except BaseException as exc:
            emit(event="error", i=i, type=type(exc).__name__, error=tail(exc))
            continue
        try:
            emit(event="value", i=i, value=encode_plain(value))
        except NotPlainData as exc:
            emit(event="not_plain", i=i, what=str(exc))


main()
"""
)


def candidate_program(entry_point: str) -> str:
    return CANDIDATE_HARNESS.replace("@ENTRY@", repr(entry_point))


def read_records(stdout: str) -> list[dict[str, Any]]:
    """The JSON-object lines a harness printed (anything else on stdout is ignored)."""
    records = []
    for line in stdout.splitlines():
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


# --------------------------------------------------------------------------------------- the checker

# A trusted process: the check code and the prompt (from the task, never from the model) and the
# decoded results. It prints one JSON line: {"pending": [...]} or {"passed": true} or {"error": ...}.
CHECKER = (
    _CODEC
    + r"""
import ast, builtins, linecache, random, sys, traceback


class Pending:
    # Stands for a result not known yet: absorbs every operation so that discovery runs on.
    def __repr__(self): return "<pending>"
    def __bool__(self): return True
    def __len__(self): return 0
    def __iter__(self): return iter(())
    def __contains__(self, item): return True
    def __hash__(self): return 0
    def __float__(self): return 0.0
    def __int__(self): return 0
    def __index__(self): return 0
    def __call__(self, *a, **k): return self
    def __getitem__(self, key): return self
    def __getattr__(self, name): return self
    def __round__(self, n=None): return self
    def __abs__(self): return self
    def __neg__(self): return self
    def __pos__(self): return self
    def __invert__(self): return self


def _absorb(self, *other):
    return self


def _yes(self, other):
    return True


for _name in ("add sub mul truediv floordiv mod pow matmul and or xor lshift rshift divmod").split():
    setattr(Pending, f"__{_name}__", _absorb)
    setattr(Pending, f"__r{_name}__", _absorb)
for _name in ("eq ne lt le gt ge").split():
    setattr(Pending, f"__{_name}__", _yes)
PENDING = Pending()


class AssertsAsExpressions(ast.NodeTransformer):
    # Discovery: `assert candidate(x) == y` still makes its call, but never stops the check.
    def visit_Assert(self, node):
        return ast.copy_location(ast.Expr(value=self.visit(node.test)), node)


class Unjudgeable(Exception):
    pass


class CallFailed(Exception):
    pass


def main():
    spec = json.loads(sys.stdin.read())
    known = spec["known"]  # argument text -> outcome record from the sandbox
    pending = []

    def contains_pending(value, depth=0):
        if value is PENDING:
            return True
        if depth < 8 and type(value) in (list, tuple, set, frozenset):
            return any(contains_pending(v, depth + 1) for v in value)
        if depth < 8 and type(value) is dict:
            return any(contains_pending(v, depth + 1) for v in list(value) + list(value.values()))
        return False

    def proxy(*args, **kwargs):
        try:
            key = plain_key(args, kwargs)
        except NotPlainData as exc:
            if contains_pending((args, tuple(kwargs.values()))):
                return PENDING  # depends on a result not known yet: asked for in a later round
            raise Unjudgeable(f"the check passed {exc} as an argument, which cannot cross to the sandbox")
        outcome = known.get(key)
        if outcome is None:
            if key not in pending:
                pending.append(key)
            return PENDING
        if "value" in outcome:
            return decode_plain(outcome["value"])
        if "not_plain" in outcome:
            raise Unjudgeable("not_plain: " + outcome["not_plain"])
        if "failed" in outcome:
            raise CallFailed(outcome["failed"])
        kind = getattr(builtins, outcome.get("type", ""), None)
        if not (isinstance(kind, type) and issubclass(kind, BaseException)):
            kind = RuntimeError
        try:
            exc = kind(outcome.get("type", "error"))
        except Exception:
            exc = RuntimeError(outcome.get("type", "error"))
        exc.leafe_candidate_error = outcome
        raise exc

    def run(discovery):
        random.seed(0)
        ns = {"__name__": "__check__", "__builtins__": builtins}
        try:
            exec(compile(spec["prompt"], "prompt.py", "exec"), ns)
        except BaseException:
            pass
        ns[spec["entry"]] = proxy
        filename = spec["filename"]
        linecache.cache[filename] = (len(spec["code"]), None, spec["code"].splitlines(True), filename)
        tree = ast.parse(spec["code"], filename)
        if discovery:
            tree = ast.fix_missing_locations(AssertsAsExpressions().visit(tree))
        exec(compile(tree, filename, "exec"), ns)
        if spec["call_check"]:
            ns["check"](proxy)

    try:
        run(discovery=True)  # asserts do not stop it, so the check runs on to its later calls
    except BaseException:
        pass
    if pending:
        return {"pending": pending}
    try:
        run(discovery=False)
    except BaseException as exc:
        if pending:
            return {"pending": pending}
        outcome = getattr(exc, "leafe_candidate_error", None)
        if isinstance(exc, CallFailed):
            return {"failed": str(exc)}
        if isinstance(exc, Unjudgeable):
            return {"unjudgeable": str(exc)}
        te = traceback.TracebackException.from_exception(exc)
        te.stack = traceback.StackSummary.from_list([f for f in te.stack if f.filename != "<string>"])
        return {"error": {
            "type": type(exc).__name__,
            "check_traceback": "".join(te.format())[-4000:],
            "candidate_traceback": outcome.get("error", "") if outcome else "",
        }}
    if pending:
        return {"pending": pending}
    return {"passed": True}


print(json.dumps(main()))
"""
)


# ---------------------------------------------------------------------------------- the orchestration

RESULTS_BYTES = 16 * 1024 * 1024  # a batch's results travel on stdout; the program's prints do not


def results_limits(limits: Limits) -> Limits:
    """The run's limits with room on stdout for the results (the output cap is for what a program
    prints, and here its prints go to /dev/null): a correct function with big results must pass."""
    return dataclasses.replace(limits, max_output_bytes=max(limits.max_output_bytes, RESULTS_BYTES))


@dataclass
class CheckOutcome:
    """How a function did against one check (visible or hidden)."""

    status: str  # "passed", "error", "failed" (a limit or crash during a call), "unjudgeable", "setup"
    runs: int = 0  # sandboxed candidate runs
    error_type: str = ""
    check_traceback: str = ""  # the check code's traceback (trusted text)
    candidate_traceback: str = ""  # the candidate's own traceback when its call raised
    failure: RunResult | None = None  # the sandbox run in which a call failed or the code did not load
    setup_records: list[dict[str, Any]] = field(default_factory=list)
    detail: str = ""


def run_check(
    problem_prompt: str,
    entry_point: str,
    source: str,
    check_code: str,
    *,
    filename: str,
    call_check: bool,
    limits: Limits,
    timeout_s: float = 60.0,
) -> CheckOutcome:
    """Run ``check_code`` in the checker against ``source`` in the sandbox, in rounds of batched calls."""
    known: dict[str, dict[str, Any]] = {}
    failures: dict[str, RunResult] = {}  # argument text -> the run that died during that call
    runs = 0
    for _ in range(MAX_ROUNDS):
        answer = _checker(problem_prompt, entry_point, check_code, filename, call_check, known, timeout_s)
        if "pending" not in answer:
            outcome = _outcome(answer, runs)
            if outcome.status == "failed":
                outcome.failure = failures.get(str(answer["failed"]))
            return outcome
        calls = [key for key in answer["pending"] if key not in known]
        result = sandbox.run_python(
            candidate_program(entry_point),
            json.dumps({"mode": "calls", "calls": calls}),
            limits=results_limits(limits),
            extra_files={"solution.py": source, "prompt.py": problem_prompt},
            filename="leafe_harness.py",
        )
        runs += 1
        records = read_records(result.stdout)
        if not any(r.get("event") == "loaded" for r in records):
            return CheckOutcome("setup", runs, failure=result, setup_records=records)
        _learn(calls, records, result, known, failures)
    return CheckOutcome("unjudgeable", runs, detail="the check did not settle within the allowed rounds")


def _learn(
    calls: list[str],
    records: list[dict[str, Any]],
    result: RunResult,
    known: dict[str, dict[str, Any]],
    failures: dict[str, RunResult],
) -> None:
    """Record the outcome of each call of a batch, up to the first one the run did not finish."""
    by_index: dict[int, dict[str, Any]] = {}
    started: set[int] = set()
    for record in records:
        index = record.get("i")
        if not isinstance(index, int) or not 0 <= index < len(calls):
            continue
        if record.get("event") == "start":
            started.add(index)
        elif record.get("event") in ("value", "error", "not_plain") and index not in by_index:
            by_index[index] = record
    for index, key in enumerate(calls):
        record = by_index.get(index)
        if record is None:
            if index in started:  # the run stopped during this call: a limit, a crash, an exit
                known[key] = {"failed": key}
                failures[key] = result
            return  # later calls were not reached: they go in the next batch
        if record["event"] == "value":
            try:  # what the program wrote is checked here, before it travels on to the checker
                plain_data.decode_plain(record.get("value"))
            except (plain_data.NotPlainData, RecursionError):
                known[key] = {"not_plain": "a value that is not plain data, or nested too deeply"}
                continue
            known[key] = {"value": record.get("value")}
        elif record["event"] == "not_plain":
            known[key] = {"not_plain": str(record.get("what", "a value"))}
        else:
            known[key] = {"type": str(record.get("type", "")), "error": str(record.get("error", ""))}


def _outcome(answer: dict[str, Any], runs: int) -> CheckOutcome:
    if answer.get("passed"):
        return CheckOutcome("passed", runs)
    if "failed" in answer:
        return CheckOutcome("failed", runs)
    if "unjudgeable" in answer:
        return CheckOutcome("unjudgeable", runs, detail=str(answer["unjudgeable"]))
    if "checker_error" in answer:
        return CheckOutcome("unjudgeable", runs, detail=str(answer["checker_error"]))
    error = answer.get("error") or {}
    return CheckOutcome(
        "error",
        runs,
        error_type=str(error.get("type", "")),
        check_traceback=str(error.get("check_traceback", "")),
        candidate_traceback=str(error.get("candidate_traceback", "")),
    )


def _checker(
    prompt: str,
    entry: str,
    code: str,
    filename: str,
    call_check: bool,
    known: dict[str, dict[str, Any]],
    timeout_s: float,
) -> dict[str, Any]:
    """One run of the trusted checker process (no model code in it, only decoded plain results)."""
    spec = {
        "prompt": prompt,
        "entry": entry,
        "code": code,
        "filename": filename,
        "call_check": call_check,
        "known": known,
    }
    try:
        payload = json.dumps(spec)
    except (RecursionError, ValueError) as exc:
        return {"checker_error": f"the results could not be passed to the checker ({type(exc).__name__})"}
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0", "LC_ALL": "C.UTF-8"}
    child = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", CHECKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        out, err = child.communicate(payload, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"checker_error": f"the check code did not finish within {timeout_s:g} s"}
    lines = out.strip().splitlines()
    try:
        answer = json.loads(lines[-1])
    except (ValueError, IndexError):
        tail = (err.strip().splitlines() or ["no output"])[-1]
        return {"checker_error": f"the checker failed: {tail}"}
    return answer if isinstance(answer, dict) else {"checker_error": "the checker printed no verdict"}
