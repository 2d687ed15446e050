"""The batched in-process engine (``--workers N`` on llama.cpp) with the smallest real model: calls
from several threads share decode steps, reuse their slot's prefix, follow their grammar and seed,
and `leafe eval` / `leafe explore` run through it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.actions import action_grammar, parse_action
from engine.backends.llama_batched import BatchedLlamaBackend
from engine.envs.sokoban import SokobanEnv
from engine.models import TEST_MODEL, cached_path, resolve_model
from engine.store import Store
from leafe_tui.cli import app

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def batched():
    if cached_path(TEST_MODEL) is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    backend = BatchedLlamaBackend(resolve_model(TEST_MODEL), slots=4, n_ctx=2048)
    yield backend
    backend.close()


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_calls_from_threads_are_decoded_together(batched: BatchedLlamaBackend) -> None:
    grammar = action_grammar(SokobanEnv().action_grammar(), 60)
    replies: dict[int, object] = {}

    def call(i: int) -> None:
        replies[i] = batched.complete(
            _ask(f"Which way do you push box {i}?"), temperature=0.7, max_tokens=96, seed=i, grammar=grammar
        )

    before = sum(count for size, count in batched.batch_sizes.items() if size > 1)
    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = sum(count for size, count in batched.batch_sizes.items() if size > 1)
    assert after > before  # decode steps that carried several sequences
    for reply in replies.values():
        assert reply.generated_tokens > 0
        parsed = parse_action(reply.text)
        assert parsed.error is None and parsed.action in {"up", "down", "left", "right"}, reply.text


def test_a_slot_reuses_its_prefix_and_a_seed_gives_the_same_reply(batched: BatchedLlamaBackend) -> None:
    first = batched.complete(_ask("Name three colours."), temperature=0.8, max_tokens=24, seed=5)
    again = batched.complete(_ask("Name three colours."), temperature=0.8, max_tokens=24, seed=5)
    other = batched.complete(_ask("Name three colours."), temperature=0.8, max_tokens=24, seed=6)
    assert again.cached_tokens >= again.prompt_tokens - 1  # the whole prompt came from the slot
    assert again.text == first.text
    assert other.cached_tokens > 0 and other.generated_tokens > 0


def test_eval_and_explore_with_workers_on_the_in_process_model(tmp_path: Path) -> None:
    if cached_path(TEST_MODEL) is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    db = tmp_path / "runs.db"
    model = ["--model", TEST_MODEL, "--n-ctx", "2048", "--db", str(db), "--max-tokens", "24"]
    evaluation = CliRunner().invoke(
        app, ["eval", "path/abc", *model, "-n", "3", "--k", "1", "--max-steps", "2", "--workers", "3"]
    )
    assert evaluation.exit_code == 0, evaluation.output
    store = Store(db)
    (record,) = store.evaluations()
    assert len(store.eval_samples(record["id"])) == 3
    assert "slots" not in json.loads(record["model_spec"])["options"]  # a resume picks its own workers

    explore = CliRunner().invoke(
        app, ["explore", "path/abc", "path/abcdefg", *model, "--budget", "1", "--workers", "2"]
    )
    assert explore.exit_code == 0, explore.output
    runs = store.list_runs()
    assert len(runs) == 2 and {r["status"] for r in runs} == {"finished"}
