"""The served backend (``--backend openai``): what it sends to each server kind, what it reads back,
and how it fails. A chat server double stands in for the server here; a real llama-cpp-python
server with SmolLM2 runs at the end."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.backends.base import BackendError
from engine.backends.served import RetryPolicy, ServedBackend, _cached_tokens
from engine.evaluation import create_evaluation, run_evaluation
from engine.explorer import ExploreConfig, Explorer
from engine.models import TEST_MODEL, cached_path
from engine.rollout import RolloutConfig
from engine.specs import EnvSpec, ModelSpec
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import ChatServerDouble, PathTestEnv, act, is_reflection, policy

FAST = RetryPolicy(tries=3, first_wait=0.01, max_wait=0.02, timeout=30)


@pytest.fixture
def double():
    servers: list[ChatServerDouble] = []

    def start(reply_fn=None, **kwargs) -> ChatServerDouble:
        server = ChatServerDouble(reply_fn or policy(), **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        with contextlib.suppress(OSError):
            server.stop()


def test_an_exploration_through_a_server_recovers_as_in_process(double, store: Store) -> None:
    server = double()
    backend = ServedBackend(server.url, "double", retry=FAST)
    run_id = Explorer(store, backend, PathTestEnv(), ExploreConfig(budget=2)).start("path/abc", "double")
    branches = store.branches(run_id)
    assert any(b.kind == "rollback" and b.outcome == "success" for b in branches)
    assert len(server.requests) > 3 and all(r["model"] == "double" and "seed" in r for r in server.requests)
    assert store.tree(run_id)["totals"]["prompt_tokens"] == 10 * len(server.requests)


@pytest.mark.parametrize(
    ("owned_by", "field"),
    [("me", "grammar"), ("llamacpp", "grammar"), ("vllm", "structured_outputs"), ("sglang", "ebnf")],
)
def test_each_server_kind_gets_the_grammar_in_its_own_field(double, owned_by: str, field: str) -> None:
    server = double(owned_by=owned_by)
    backend = ServedBackend(server.url, "double", retry=FAST)
    backend.complete(
        [{"role": "user", "content": "hi"}], temperature=0, max_tokens=8, seed=1, grammar='root ::= "a"'
    )
    (sent,) = server.requests
    grammar = sent[field]["grammar"] if field == "structured_outputs" else sent[field]
    assert grammar == 'root ::= "a"'


def test_a_server_without_grammars_refuses_a_constrained_run_in_one_sentence(double) -> None:
    server = double(owned_by="openai")
    backend = ServedBackend(server.url, "double", retry=FAST)
    with pytest.raises(BackendError, match="takes no grammar.*--no-grammar"):
        backend.complete(
            [{"role": "user", "content": "hi"}], temperature=0, max_tokens=8, seed=1, grammar="g"
        )
    assert server.requests == []  # nothing was sent unconstrained
    reply = backend.complete([{"role": "user", "content": "hi"}], temperature=0, max_tokens=8, seed=1)
    assert reply.text.startswith("<think>")


def test_busy_answers_are_retried_then_reported(double) -> None:
    server = double(failures=[503, 429])
    backend = ServedBackend(server.url, "double", retry=FAST)
    reply = backend.complete([{"role": "user", "content": "x"}], temperature=0, max_tokens=8, seed=1)
    assert reply.generated_tokens == 3 and len(server.requests) == 1
    server.failures = [503, 503, 503]
    with pytest.raises(BackendError, match=r"busy \(503.*after 3 tries"):
        backend.complete([{"role": "user", "content": "x"}], temperature=0, max_tokens=8, seed=1)


def test_a_model_the_server_does_not_serve_is_named_with_what_it_does(double) -> None:
    server = double(model="qwen")
    with pytest.raises(BackendError, match="does not serve a model 'smol'; it serves: qwen"):
        ServedBackend(server.url, "smol", retry=FAST)


def test_a_server_that_is_not_there_is_one_sentence_at_once() -> None:
    with socket.socket() as sock:  # a free port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach the model server.*connection refused"):
        ServedBackend(f"http://127.0.0.1:{port}", "m", retry=RetryPolicy(tries=4, first_wait=5))
    assert time.monotonic() - started < 4  # the first contact is not retried


def test_cached_tokens_are_read_where_each_server_reports_them() -> None:
    assert _cached_tokens({"usage": {"prompt_tokens_details": {"cached_tokens": 7}}}) == 7  # vLLM, SGLang
    assert _cached_tokens({"usage": {}, "timings": {"cache_n": 12}}) == 12  # llama-server
    assert _cached_tokens({"usage": {"prompt_tokens": 5}}) == 0  # llama-cpp-python: not reported


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_server_that_dies_mid_run_loses_nothing_and_the_run_resumes(
    double, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI says one sentence; every committed node stays; --resume finishes the run against the
    server started again at the same address (the run recorded it)."""
    db, port = tmp_path / "runs.db", _free_port()
    dying = double(port=port, die_after=3)
    args = ["explore", "path/abc", "--backend", "openai", "--base-url", f"http://127.0.0.1:{port}"]
    args += ["--model", "double", "--budget", "2", "--db", str(db)]
    monkeypatch.setattr("engine.backends.served.DEFAULT_RETRY", FAST)
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1, first.output
    assert "error:" in first.output and "Traceback" not in first.output
    assert "cannot reach the model server" in first.output or "dropped the connection" in first.output
    store = Store(db)
    run = store.list_runs()[0]
    kept = [n.id for n in store.nodes(run["id"])]
    actions = sum(not is_reflection(r["messages"]) for r in dying.requests)
    assert run["status"] == "failed" and len(kept) == 1 + actions  # the root and every answered step
    spec = json.loads(run["model_spec"])
    assert spec["backend"] == "openai" and spec["base_url"].endswith(str(port)) and spec["model"] == "double"

    double(port=port)
    second = CliRunner().invoke(app, ["explore", "--resume", str(run["id"]), "--db", str(db)])
    assert second.exit_code == 0, second.output
    assert [n.id for n in store.nodes(run["id"])][: len(kept)] == kept
    assert store.get_run(run["id"])["status"] == "finished"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--base-url", "http://127.0.0.1:1"], "add --backend openai"),
        (["--backend", "openai", "--model", "m"], "give --base-url URL"),
        (["--backend", "openai", "--base-url", "http://127.0.0.1:1"], "give --model NAME"),
        (["--backend", "openai", "--base-url", "127.0.0.1:1", "--model", "m"], "must start with http://"),
        (
            ["--backend", "openai", "--base-url", "http://h:1", "--model", "m", "--adapter", "x.gguf"],
            "its server",
        ),
    ],
)
def test_served_model_mistakes_are_one_line_errors(args: list[str], expected: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["explore", "path/abc", "--db", str(tmp_path / "x.db"), *args])
    assert result.exit_code == 2 and expected in result.output, result.output
    assert "Traceback" not in result.output


def _seeded_letters(messages, seed: int) -> str:
    """Right letters, or a wrong one when the seed says so: samples differ by their seeds alone."""
    time.sleep(0.01)  # long enough for calls to overlap
    step = sum(1 for m in messages if m["role"] == "assistant")
    return act("x" if seed % 3 == 0 else "abcdefg"[step % 7])  # the tasks spell prefixes of abcdefg


def _evaluate(store: Store, server: ChatServerDouble, workers: int) -> list[tuple]:
    tasks = ["path/abc", "path/abcdefg"]
    specs = {t: EnvSpec("path") for t in tasks}
    eval_id = create_evaluation(store, ModelSpec(), tasks, 6, [1], RolloutConfig(), specs)
    backend = ServedBackend(server.url, "double", retry=FAST)
    run_evaluation(
        store, eval_id, backend, {t: PathTestEnv() for t in tasks}, RolloutConfig(), workers=workers
    )
    samples = store.eval_samples(eval_id)
    return sorted((s.task_id, s.sample, s.success, s.steps, json.dumps(s.trajectory)) for s in samples)


def test_eval_workers_run_samples_at_once_with_the_same_results(double, store: Store) -> None:
    server = double(_seeded_letters, with_seed=True)
    alone = _evaluate(store, server, workers=1)
    assert server.max_in_flight == 1
    together = _evaluate(store, server, workers=4)
    assert server.max_in_flight > 1  # the calls did overlap
    assert together == alone and len(alone) == 12
    assert {row[2] for row in alone} == {True, False}  # the seeds made a difference


def test_workers_must_be_at_least_one(tmp_path: Path) -> None:
    args = ["eval", "path/abc", "--backend", "scripted", "--model", "x", "--workers", "0"]
    result = CliRunner().invoke(app, [*args, "--db", str(tmp_path / "e.db")])
    assert result.exit_code == 2 and "at least 1" in result.output


def _trees(store: Store, run_ids: list[int]) -> list[list[tuple]]:
    return [
        [(n.step, n.action, n.observation, store.branch(n.branch_id).kind) for n in store.nodes(r)]
        for r in run_ids
    ]


def test_explore_workers_build_the_same_trees_at_once_without_locking_the_database(
    double, tmp_path: Path
) -> None:
    """Eight tasks on eight workers, every step written by its own thread: no "database is locked",
    and each tree is the one a single worker builds."""
    server = double(_seeded_letters, with_seed=True)
    tasks = ["path/abc", "path/abcdefg"] * 4
    trees = {}
    for workers in (1, 8):
        db = tmp_path / f"w{workers}.db"
        args = ["explore", *tasks, "--backend", "openai", "--base-url", server.url, "--model", "double"]
        result = CliRunner().invoke(app, [*args, "--budget", "2", "--workers", str(workers), "--db", str(db)])
        assert result.exit_code == 0, result.output
        store = Store(db)
        runs = store.list_runs()
        assert sorted(r["task_id"] for r in runs) == sorted(tasks) and {r["status"] for r in runs} == {
            "finished"
        }
        trees[workers] = sorted(
            zip([r["task_id"] for r in runs], _trees(store, [r["id"] for r in runs]), strict=True)
        )
        if workers == 1:
            assert server.max_in_flight == 1
    assert server.max_in_flight > 1
    assert trees[8] == trees[1]


def test_a_separate_reflection_model_writes_the_reflections_and_is_recorded(double, tmp_path: Path) -> None:
    actor, reflector = double(), double(model="judge")
    db = tmp_path / "runs.db"
    args = ["explore", "path/abc", "--backend", "openai", "--base-url", actor.url, "--model", "double"]
    args += [
        "--reflect-model",
        "judge",
        "--reflect-base-url",
        reflector.url,
        "--budget",
        "2",
        "--db",
        str(db),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert reflector.requests and all(is_reflection(r["messages"]) for r in reflector.requests)
    assert actor.requests and not any(is_reflection(r["messages"]) for r in actor.requests)
    store = Store(db)
    (run,) = store.list_runs()
    assert json.loads(run["reflect_spec"]) == {
        **json.loads(run["reflect_spec"]),
        "model": "judge",
        "base_url": reflector.url,
    }
    assert {r["model"] for r in store.reflections(run["id"])} == {f"openai:judge@{reflector.url}/v1"}
    assert any(b.kind == "rollback" and b.outcome == "success" for b in store.branches(run["id"]))


# --- a real server: llama-cpp-python's own, with SmolLM2, on a loopback port ---------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory):
    """``python -m llama_cpp.server`` serving SmolLM2 as ``smollm2-135m``; stopped afterwards."""
    pytest.importorskip("llama_cpp.server", reason="the serve extra is not installed")
    path = cached_path(TEST_MODEL)
    if path is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    port = _free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", TEST_MODEL]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "1"]
    command += ["--verbose", "false"]
    log = tmp_path_factory.mktemp("server") / "server.log"  # a file: a full pipe would stall the server
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/v1/models", timeout=2).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.mark.real_model
def test_explore_and_eval_through_llama_cpp_pythons_server(llama_server: str, tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    served = ["--backend", "openai", "--base-url", llama_server, "--model", TEST_MODEL, "--db", str(db)]
    explore = CliRunner().invoke(
        app, ["explore", "sokoban/fixed-1", *served, "--budget", "1", "--max-tokens", "48", "--json"]
    )
    assert explore.exit_code == 0, explore.output
    store = Store(db)
    (run,) = store.list_runs()
    assert json.loads(run["model_spec"])["base_url"] == llama_server
    assert run["backend"] == f"openai:{TEST_MODEL}@{llama_server}/v1"
    totals = store.tree(run["id"])["totals"]
    assert totals["prompt_tokens"] > 0 and totals["generated_tokens"] > 0  # the server's usage figures

    evaluation = CliRunner().invoke(
        app,
        ["eval", "sokoban/fixed-1", *served, "-n", "2", "--k", "1", "--max-tokens", "48", "--max-steps", "2"],
    )
    assert evaluation.exit_code == 0, evaluation.output
    (record,) = store.evaluations()
    assert json.loads(record["model_spec"])["backend"] == "openai"
    assert len(store.eval_samples(record["id"])) == 2
