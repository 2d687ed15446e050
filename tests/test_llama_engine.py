"""Integration tests on the real llama.cpp engine with the smallest real model (SmolLM2-135M).

SmolLM2 is too weak to be a good agent; these tests check the engine's behaviour (prefix reuse,
KV save/restore, a tree in SQLite), not the quality of its answers.
"""

from __future__ import annotations

import pytest

pytest.importorskip("llama_cpp")

from engine.backends.base import Completion, ModelBackend  # noqa: E402
from engine.backends.llama import LlamaCppBackend  # noqa: E402
from engine.backends.scripted import ScriptedBackend  # noqa: E402
from engine.envs.sokoban import SokobanEnv  # noqa: E402
from engine.explorer import ExploreConfig, Explorer  # noqa: E402
from engine.models import TEST_MODEL, resolve_model  # noqa: E402
from engine.prompts import Turn, trajectory_messages  # noqa: E402
from engine.store import Store  # noqa: E402
from tests.doubles import is_reflection, reflect  # noqa: E402

pytestmark = pytest.mark.real_model

HELP = SokobanEnv.action_help


@pytest.fixture(scope="module")
def backend() -> LlamaCppBackend:
    model = LlamaCppBackend(resolve_model(TEST_MODEL), n_ctx=4096)
    yield model
    model.close()


def history(n: int) -> list[Turn]:
    return [
        Turn(f"<think>try move {i}</think>\n<action>left</action>", f"You moved left. Steps left: {15 - i}.")
        for i in range(1, n + 1)
    ]


def greedy(backend: LlamaCppBackend, messages) -> Completion:
    return backend.complete(messages, temperature=0.0, max_tokens=12, seed=1)


def test_consecutive_steps_reuse_the_prefix(backend: LlamaCppBackend) -> None:
    backend.llm.reset()
    first = greedy(backend, trajectory_messages(HELP, "a grid", history(1)))
    second = greedy(backend, trajectory_messages(HELP, "a grid", history(2)))
    assert first.cached_tokens == 0 and first.prompt_tokens > 50 and first.generated_tokens > 0
    assert second.cached_tokens > first.prompt_tokens // 2
    assert second.evaluated_tokens < second.prompt_tokens


def test_restored_branch_evaluates_fewer_tokens_than_a_cold_start(backend: LlamaCppBackend) -> None:
    guidance = {4: ["push the box before walking around it"]}
    trunk = trajectory_messages(HELP, "a grid", history(6))
    branch = trajectory_messages(HELP, "a grid", history(3), guidance)
    backend.llm.reset()
    greedy(backend, trunk)  # the model's context now holds the long trajectory
    saved = backend.save_prefix(branch)
    assert saved is not None and len(saved.tokens) > 50
    greedy(backend, trajectory_messages(HELP, "another task entirely", []))  # work elsewhere in between
    backend.restore_prefix(saved)
    restored = greedy(backend, branch)
    backend.llm.reset()
    cold = greedy(backend, branch)
    assert cold.cached_tokens == 0 and restored.prompt_tokens == cold.prompt_tokens
    assert restored.evaluated_tokens < cold.evaluated_tokens
    assert restored.text == cold.text  # the restored KV is the same state, not an approximation


def test_a_save_in_the_middle_of_an_episode_leaves_its_cache_whole(backend: LlamaCppBackend) -> None:
    """A periodic reflection queues a branch while its episode goes on: the save must not truncate
    the live cache (the next step would evaluate everything after the rollback point again)."""
    trunk = trajectory_messages(HELP, "a grid", history(4))
    branch = trajectory_messages(HELP, "a grid", history(1))
    greedy(backend, trunk)
    saved = backend.save_prefix(branch, live=True)
    assert saved is not None
    goes_on = greedy(backend, trajectory_messages(HELP, "a grid", history(5)))
    assert goes_on.cached_tokens >= backend_prompt_tokens(backend, trunk) - 8  # nothing re-read
    greedy(backend, trajectory_messages(HELP, "another task entirely", []))
    backend.restore_prefix(saved)
    restored = greedy(backend, branch)
    backend.llm.reset()
    cold = greedy(backend, branch)
    assert restored.cached_tokens >= len(saved.tokens) and restored.text == cold.text


def backend_prompt_tokens(backend: LlamaCppBackend, messages) -> int:
    return len(backend.tokens(messages))


def test_no_cache_mode_evaluates_everything(tmp_path) -> None:
    plain = LlamaCppBackend(resolve_model(TEST_MODEL), n_ctx=2048, reuse_prefix=False)
    try:
        greedy(plain, trajectory_messages(HELP, "a grid", history(1)))
        again = greedy(plain, trajectory_messages(HELP, "a grid", history(2)))
        assert again.cached_tokens == 0
        assert plain.save_prefix(trajectory_messages(HELP, "a grid", history(1))) is None
    finally:
        plain.close()


class RealActionsScriptedReflections(ModelBackend):
    """Test double around the real engine: actions come from llama.cpp, reflections are scripted
    (SmolLM2 cannot be relied on to ask for a rollback)."""

    def __init__(self, real: LlamaCppBackend) -> None:
        self.real = real
        self.name = real.name
        self.reflections = ScriptedBackend(reply_fn=lambda m: reflect(2, "go up first"))

    def complete(self, messages, **kwargs) -> Completion:
        if is_reflection(messages):
            return self.reflections.complete(messages, **kwargs)
        return self.real.complete(messages, **kwargs)

    def save_prefix(self, messages, *, live=False):
        return self.real.save_prefix(messages, live=live)

    def restore_prefix(self, handle) -> None:
        self.real.restore_prefix(handle)


def test_short_real_exploration_builds_a_tree_in_sqlite(backend: LlamaCppBackend, tmp_path) -> None:
    store = Store(tmp_path / "real.db")
    config = ExploreConfig(budget=2, max_tokens=32, reflect_every=3, grammar=True, max_thought_chars=12)
    explorer = Explorer(store, RealActionsScriptedReflections(backend), SokobanEnv(), config)
    run_id = explorer.start("sokoban/fixed-1", TEST_MODEL)

    nodes = store.nodes(run_id)
    steps = [n for n in nodes if n.step > 0]
    assert steps and all(n.prompt_tokens > 0 and n.generated_tokens > 0 for n in steps)
    assert all(n.action is not None for n in steps)  # the grammar makes every reply parse
    branch = next(b for b in store.branches(run_id) if b.kind == "rollback" and b.status == "done")
    first = store.branch_nodes(branch.id)[0]
    assert first.step == 2 and store.node(first.parent_id).step == 1
    assert 0 < first.cached_tokens < first.prompt_tokens  # the branch started from the restored prefix


def test_real_reflection_is_stored_parsed_or_not(backend: LlamaCppBackend, tmp_path) -> None:
    store = Store(tmp_path / "reflect.db")
    config = ExploreConfig(
        budget=1, max_tokens=32, reflect_max_tokens=64, reflect_every=5, grammar=True, max_thought_chars=12
    )
    run_id = Explorer(store, backend, SokobanEnv(), config).start("sokoban/fixed-1", TEST_MODEL)
    reflections = store.reflections(run_id)
    assert reflections and all(r["raw_response"] and r["prompt_tokens"] > 0 for r in reflections)
    assert all(r["parse_error"] or r["rollback_step"] is None or r["rollback_step"] >= 1 for r in reflections)


@pytest.mark.parametrize("task", ["sokoban/fixed-1", "code/suite/digit-collapse"])
def test_grammar_constrained_replies_parse(backend: LlamaCppBackend, task: str) -> None:
    from engine.actions import action_grammar, parse_action
    from engine.envs import env_for_task

    env = env_for_task(task)
    messages = trajectory_messages(env.action_help, env.reset(task), [])
    grammar = action_grammar(env.action_grammar(), max_thought_chars=24)
    for seed in (1, 2):
        reply = backend.complete(messages, temperature=1.0, max_tokens=160, seed=seed, grammar=grammar)
        assert reply.text.startswith("<think>") and "<action>" in reply.text
        if reply.text.endswith("</action>"):  # the code block may still be open when max_tokens runs out
            parsed = parse_action(reply.text)
            assert parsed.error is None and parsed.action
        if task.startswith("sokoban"):
            assert parse_action(reply.text).action in {"up", "down", "left", "right"}
