"""The run read model: paths, forks, the first and original reply of a branch, and the guidance in force."""

from __future__ import annotations

from engine.run_tree import RunTree
from engine.store import Store
from tests.doubles import SUMMARY, explore_recovery, is_reflection, rollback_branch


def test_paths_forks_and_branch_replies(store: Store) -> None:
    run_id, _ = explore_recovery(store)
    tree = RunTree.load(store, run_id)
    branch = rollback_branch(store, run_id)
    (success,) = tree.successes()
    path = tree.path(success.id)
    assert path[0].id == tree.root_id and path[-1] is success
    assert [n.step for n in path] == list(range(len(path)))
    assert branch.id in tree.forks[branch.from_node_id]
    first = tree.first_node(tree.branches[branch.id])
    assert first is not None and first.step == branch.rollback_step and first.parent_id == branch.from_node_id
    original = tree.original_node(tree.branches[branch.id])
    assert original is not None and original.step == first.step and original.id != first.id
    assert "<action>x</action>" in (original.raw_response or "")  # the wrong letter it recovered from
    assert sorted(tree.siblings(first.id)) == sorted([first.id, original.id])
    assert [n.id for n in tree.branch_nodes(branch.id)] == tree.steps[branch.id]


def test_guidance_in_force_is_what_the_agent_was_shown(store: Store) -> None:
    run_id, backend = explore_recovery(store)
    tree = RunTree.load(store, run_id)
    branch = tree.branches[rollback_branch(store, run_id).id]
    assert tree.guidance(branch.id) == {branch.rollback_step: [SUMMARY]}
    for node in tree.branch_nodes(branch.id):
        assert tree.guidance_at(node) == [SUMMARY]
    root_episode = next(b for b in tree.branches.values() if b.kind == "root")
    assert all(tree.guidance_at(n) == [] for n in tree.branch_nodes(root_episode.id))
    # as many action prompts carried the summary as there are steps the tree says it guided
    actions = [p for p in backend.prompts if not is_reflection(p)]
    shown = [p for p in actions if any(SUMMARY in m["content"] for m in p if m["role"] == "user")]
    guided_steps = [n for n in tree.nodes.values() if n.step > 0 and tree.guidance_at(n)]
    assert len(actions) == len(tree.nodes) - 1 and len(shown) == len(guided_steps) > 0


def test_live_updates_give_the_same_tree_as_a_load(store: Store) -> None:
    run_id, _ = explore_recovery(store)
    loaded = RunTree.load(store, run_id)
    live = RunTree(store.get_run(run_id))
    for node in sorted(store.nodes(run_id), key=lambda n: n.id):
        # a branch arrives before its nodes in a live run; nodes may be replayed twice
        branch = next(b for b in store.branches(run_id) if b.id == node.branch_id)
        live.set_branch(branch)
        assert live.add_node(node) is True
        assert live.add_node(node) is False
    for branch in store.branches(run_id):
        live.set_branch(branch)
    assert dict(live.steps) == dict(loaded.steps)
    assert {k: v for k, v in live.forks.items() if v} == {k: v for k, v in loaded.forks.items() if v}
    assert live.root_id == loaded.root_id
