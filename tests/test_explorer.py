"""Breadth-first Stage-1 logic on the scripted backend and a test environment."""

from __future__ import annotations

import itertools
import threading

import pytest

from engine.backends.scripted import ScriptedBackend
from engine.events import BranchChanged
from engine.explorer import ExploreConfig, Explorer
from engine.store import Store
from tests.doubles import PathTestEnv, act, guided, is_reflection, policy, reflect


def letter_policy(word: str, wrong_at: int = 2, rollback_to: int = 2):
    """Right letters, except a wrong one at ``wrong_at`` unless guided; reflections roll back."""

    def reply(messages: list[dict[str, str]]) -> str:
        if is_reflection(messages):
            return reflect(rollback_to, f"at step {rollback_to} write {word[rollback_to - 1]!r}")
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        if step == wrong_at and not guided(messages):
            return act("x")
        return act(word[step - 1])

    return reply


def explore(store: Store, reply, task: str = "path/abc", **config) -> tuple[int, ScriptedBackend]:
    backend = ScriptedBackend(reply_fn=reply)
    run_id = Explorer(store, backend, PathTestEnv(), ExploreConfig(**config)).start(task, "scripted")
    return run_id, backend


def test_failure_reflection_creates_branch_that_recovers(store: Store) -> None:
    run_id, backend = explore(store, letter_policy("abc"), budget=2)
    branches = store.branches(run_id)
    assert [b.kind for b in branches] == ["root", "rollback"]
    root, branch = branches
    assert root.outcome == "failure" and branch.outcome == "success"
    assert branch.rollback_step == 2 and branch.summary == "at step 2 write 'b'"
    assert branch.parent_branch_id == root.id and branch.depth == 1 and branch.review == "pending"

    nodes = {n.id: n for n in store.nodes(run_id)}
    first = store.branch_nodes(branch.id)[0]
    assert (
        first.step == 2 and nodes[first.parent_id].step == 1 and nodes[first.parent_id].branch_id == root.id
    )
    path = store.path_to(store.branch_nodes(branch.id)[-1].id)
    assert [n.action for n in path] == [None, "a", "b", "c"] and path[-1].success

    reflection = store.reflections(run_id)[0]
    assert reflection["trigger"] == "failure" and reflection["rollback_step"] == 2
    assert branch.reflection_id == reflection["id"]
    # the branch's first prompt carries the summary right before step 2, and shares the history
    branch_prompt = backend.prompts[3]
    assert "at step 2 write 'b'" in branch_prompt[-1]["content"]
    assert "Observation before step 2" in branch_prompt[-1]["content"]
    assert branch_prompt[:3] == backend.prompts[0][:2] + [branch_prompt[2]]


def test_branch_reuses_saved_prefix(store: Store) -> None:
    run_id, _ = explore(store, letter_policy("abc"), budget=2)
    branch = store.branches(run_id)[1]
    first = store.branch_nodes(branch.id)[0]
    assert first.cached_tokens > 0 and first.cached_tokens < first.prompt_tokens


def test_exploration_continues_after_success_until_budget(store: Store) -> None:
    run_id, _ = explore(store, letter_policy("abc"), budget=3)
    kinds = [(b.kind, b.status, b.outcome) for b in store.branches(run_id)]
    assert kinds == [
        ("root", "done", "failure"),
        ("rollback", "done", "success"),
        ("restart", "done", "failure"),
        ("rollback", "skipped", "budget spent"),
    ]
    assert store.episodes_used(run_id) == 3
    assert store.get_run(run_id)["status"] == "finished"


def test_breadth_first_order_and_max_depth(store: Store) -> None:
    # Periodic reflections after steps 2 and 4 each queue a branch; the episode goes on and fails.
    lessons = itertools.count()

    def reply(messages):
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        if is_reflection(messages):
            return reflect(1, f"start differently (lesson {next(lessons)})")
        return act("x" if step == 5 else "abcdefg"[step - 1])

    run_id, _ = explore(store, reply, task="path/abcdefg", budget=12, max_depth=2, reflect_every=2)
    branches = store.branches(run_id)
    started = [b for b in branches if b.status == "done"]
    depths = [b.depth for b in started if b.kind != "restart"]
    assert depths[:1] == [0] and depths == sorted(depths)  # FIFO: shallower branches run first
    assert len([b for b in branches if b.depth == 1]) == 3  # two periodic + one failure reflection
    assert max(b.depth for b in branches) == 2
    deep = [r for r in store.reflections(run_id) if r["note"] == "max depth reached"]
    assert deep and all(not any(b.reflection_id == r["id"] for b in branches) for r in deep)


def test_unparsable_and_no_rollback_reflections_spawn_no_branch(store: Store) -> None:
    answers = iter(["I am not sure what to do", reflect("none")])

    def reply(messages):
        if is_reflection(messages):
            return next(answers)
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        return act("x" if step == 2 else "abc"[step - 1])

    run_id, _ = explore(store, reply, budget=2)
    reflections = store.reflections(run_id)
    assert reflections[0]["parse_error"] and reflections[0]["rollback_step"] is None
    assert reflections[1]["parse_error"] is None and reflections[1]["rollback_step"] is None
    assert [b.kind for b in store.branches(run_id)] == ["root", "restart"]


def test_periodic_reflection_every_k_steps(store: Store) -> None:
    calls: list[int] = []

    def reply(messages):
        step = sum(1 for m in messages if m["role"] == "assistant")
        if is_reflection(messages):
            calls.append(step)
            return reflect("none")
        return act("abcdefg"[step])

    run_id, _ = explore(store, reply, task="path/abcdefg", budget=1, reflect_every=2)
    assert calls == [2, 4, 6]  # after steps 2 and 4; step 6 ends the episode out of steps
    triggers = [r["trigger"] for r in store.reflections(run_id)]
    assert triggers == ["periodic", "periodic", "failure"]


def test_periodic_rollback_queues_a_branch_and_the_episode_goes_on(store: Store) -> None:
    def reply(messages):
        step = sum(1 for m in messages if m["role"] == "assistant")
        if is_reflection(messages):
            return reflect(1, f"be quicker than {step} steps")
        return act("abcdefg"[step])

    run_id, _ = explore(store, reply, task="path/abcdefg", budget=1, reflect_every=2)
    root, *queued = store.branches(run_id)
    assert len(store.branch_nodes(root.id)) == 7  # step 0 + six steps: the episode ran to its end
    # periodic reflections after steps 2 and 4, and the failure one after step 6
    assert [b.rollback_step for b in queued] == [1, 1, 1] and all(b.status == "skipped" for b in queued)


def test_a_repeated_rollback_request_spawns_no_second_branch(store: Store) -> None:
    def reply(messages):
        step = sum(1 for m in messages if m["role"] == "assistant")
        if is_reflection(messages):
            return reflect(1, "be quicker this time")
        return act("abcdefg"[step])

    run_id, _ = explore(store, reply, task="path/abcdefg", budget=1, reflect_every=2)
    rollbacks = [b for b in store.branches(run_id) if b.kind == "rollback"]
    assert len(rollbacks) == 1
    notes = [r["note"] for r in store.reflections(run_id)]
    assert notes == [None, f"same as branch #{rollbacks[0].id}", f"same as branch #{rollbacks[0].id}"]


def test_invalid_reply_is_an_invalid_step(store: Store) -> None:
    replies = iter(["I think the answer is a", act("a"), act("b"), act("c")])
    run_id, _ = explore(store, lambda m: reflect("none") if is_reflection(m) else next(replies), budget=1)
    first = store.nodes(run_id)[1]
    assert not first.valid and first.action is None and "no <action>" in first.feedback
    assert store.nodes(run_id)[-1].success


class Killed(BaseException):
    """Stands for SIGKILL in-process: nothing after the raise runs."""


def test_resume_after_kill_neither_loses_nor_duplicates(tmp_path) -> None:
    reference = Store(tmp_path / "reference.db")
    ref_id, _ = explore(reference, letter_policy("abc"), budget=3)

    store = Store(tmp_path / "killed.db")
    calls = {"n": 0}
    policy = letter_policy("abc")

    def dying(messages):
        calls["n"] += 1
        if calls["n"] == 5:  # the first step of the branch, after its reflection was committed
            raise Killed
        return policy(messages)

    with pytest.raises(Killed):
        explore(store, dying, budget=3)
    run_id = store.list_runs()[0]["id"]
    committed = [(n.branch_id, n.step) for n in store.nodes(run_id)]
    Explorer(store, ScriptedBackend(reply_fn=policy), PathTestEnv(), ExploreConfig(budget=3)).resume(run_id)

    nodes = [(n.branch_id, n.step, n.action) for n in store.nodes(run_id)]
    assert [(b, s) for b, s, _ in nodes[: len(committed)]] == committed
    assert len(set((b, s) for b, s, _ in nodes)) == len(nodes)  # no duplicated step
    assert nodes == [(n.branch_id, n.step, n.action) for n in reference.nodes(ref_id)]
    assert len(store.reflections(run_id)) == len(reference.reflections(ref_id))
    assert store.get_run(run_id)["status"] == "finished"


def test_settings_are_recorded_with_the_run(store: Store) -> None:
    run_id, _ = explore(store, letter_policy("abc"), budget=2, max_depth=1, reflect_every=3, seed=7)
    config = store.get_run(run_id)["config"]
    assert (config["budget"], config["max_depth"], config["reflect_every"], config["seed"]) == (2, 1, 3, 7)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="attempt budget"):
        ExploreConfig(budget=0).validate()


def test_rebranch_starts_a_sibling_with_the_edited_summary(store: Store) -> None:
    run_id, _ = explore(store, letter_policy("abc"), budget=2)
    original = store.branches(run_id)[1]
    old_nodes = store.branch_nodes(original.id)
    backend = ScriptedBackend(reply_fn=letter_policy("abc"))
    config = ExploreConfig.from_dict(store.get_run(run_id)["config"])
    explorer = Explorer(store, backend, PathTestEnv(), config)

    new = explorer.rebranch(run_id, original.id, "write b at step 2, then c")

    assert store.branch(original.id) == original and store.branch_nodes(original.id) == old_nodes
    assert (new.kind, new.origin, new.rebranch_of) == ("rollback", "person", original.id)
    assert (new.from_node_id, new.rollback_step, new.depth) == (original.from_node_id, 2, original.depth)
    assert new.summary == original.summary and new.summary_edited == "write b at step 2, then c"
    assert new.status == "done" and new.outcome == "success"
    assert "write b at step 2, then c" in backend.prompts[0][-1]["content"]
    assert original.summary not in backend.prompts[0][-1]["content"]
    assert store.get_run(run_id)["config"]["budget"] == 3  # the spent budget grew by the re-branch
    assert [e["text"] for e in store.summary_edits(new.id)] == ["write b at step 2, then c"]


def test_rebranch_refuses_what_it_cannot_do(store: Store) -> None:
    run_id, _ = explore(store, letter_policy("abc"), budget=2)
    root, branch = store.branches(run_id)
    explorer = Explorer(store, ScriptedBackend(reply_fn=letter_policy("abc")), PathTestEnv())
    with pytest.raises(ValueError, match="not a rollback branch"):
        explorer.rebranch(run_id, root.id, "anything")
    with pytest.raises(ValueError, match="empty"):
        explorer.rebranch(run_id, branch.id, "   ")
    assert len(store.branches(run_id)) == 2


def test_summary_edits_keep_the_generated_text_and_every_edit(store: Store) -> None:
    run_id, _ = explore(store, letter_policy("abc"), budget=2)
    branch = store.branches(run_id)[1]
    store.edit_summary(branch.id, "first edit")
    store.edit_summary(branch.id, "second edit")
    edited = store.branch(branch.id)
    assert edited.summary == branch.summary and edited.effective_summary == "second edit"
    assert [e["text"] for e in store.summary_edits(branch.id)] == ["first edit", "second edit"]


def test_rebranch_leaves_a_run_with_queued_work_resumable(store: Store) -> None:
    """A person's re-branch runs only its own branch: the run's queued branches stay for a resume."""
    stop = threading.Event()

    def stop_when_queued(event) -> None:
        if isinstance(event, BranchChanged) and event.status == "queued":
            stop.set()

    backend = ScriptedBackend(reply_fn=letter_policy("abc"))
    explorer = Explorer(
        store, backend, PathTestEnv(), ExploreConfig(budget=3), on_event=stop_when_queued, stop=stop
    )
    run_id = explorer.start("path/abc", "scripted")
    queued = next(b for b in store.branches(run_id) if b.kind == "rollback")
    assert queued.status == "queued" and store.get_run(run_id)["status"] == "stopped"

    config = ExploreConfig.from_dict(store.get_run(run_id)["config"])
    person = Explorer(store, ScriptedBackend(reply_fn=letter_policy("abc")), PathTestEnv(), config)
    person.rebranch(run_id, queued.id, "write b at step 2")
    assert store.branch(queued.id).status == "queued"
    assert store.get_run(run_id)["status"] != "finished"  # was "finished": resume refused, work lost

    Explorer(store, ScriptedBackend(reply_fn=letter_policy("abc")), PathTestEnv(), config).resume(run_id)
    assert store.branch(queued.id).status == "done" and store.get_run(run_id)["status"] == "finished"


class CountingSnapshots(PathTestEnv):
    """Test double: takes snapshots and counts resets and steps."""

    def __init__(self) -> None:
        super().__init__()
        self.resets = self.steps_taken = 0

    def reset(self, task_id: str, seed: int = 0) -> str:
        self.resets += 1
        return super().reset(task_id, seed)

    def step(self, action):
        self.steps_taken += 1
        return super().step(action)

    def snapshot(self):
        return (self.word, self.position, self.steps)

    def restore(self, snapshot) -> None:
        self.word, self.position, self.steps = snapshot


def _shape(store: Store, run_id: int) -> list[tuple]:
    return [(n.step, n.action, n.observation, n.done, n.success) for n in store.nodes(run_id)]


def test_a_branch_starts_from_a_snapshot_instead_of_replaying(tmp_path) -> None:
    """The same tree as with reset-and-replay, without the reset and the replayed steps."""
    plain_store, snap_store = Store(tmp_path / "plain.db"), Store(tmp_path / "snap.db")
    plain = PathTestEnv()
    plain_run = Explorer(
        plain_store, ScriptedBackend(reply_fn=policy()), plain, ExploreConfig(budget=2)
    ).start("path/abc", "scripted")
    snapping = CountingSnapshots()
    snap_run = Explorer(
        snap_store, ScriptedBackend(reply_fn=policy()), snapping, ExploreConfig(budget=2)
    ).start("path/abc", "scripted")
    assert _shape(snap_store, snap_run) == _shape(plain_store, plain_run)
    assert any(b.kind == "rollback" for b in snap_store.branches(snap_run))
    actions = sum(1 for n in snap_store.nodes(snap_run) if n.step > 0)
    assert snapping.resets == 1 and snapping.steps_taken == actions  # nothing replayed
