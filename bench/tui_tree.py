"""Benchmark: the TUI on a large run, and a live update applied in place against a full rebuild.

Builds a synthetic run of ``--nodes`` steps (many branches, each rolling back into an earlier
episode) directly through the Store API, then, headless:

- opens it in the app and times until the tree is populated and drawn;
- times cursor keys on the big tree (the app must stay responsive);
- inserts ``--update`` new nodes through a second Store (as the explorer's thread would), posts
  their events to the app, and times until every one is a visible TreeNode;
- as the baseline, times one full rebuild of the same tree (re-read the run, rebuild the tree),
  which is what a view that redraws from the store does on every event.

    .venv/bin/python bench/tui_tree.py --nodes 5000 --update 50
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.explorer import ExplorerEvent  # noqa: E402
from engine.store import Node, Store  # noqa: E402
from leafe_tui.app import LeafeApp  # noqa: E402
from leafe_tui.app.model import RunIndex, branch_key, node_key  # noqa: E402
from leafe_tui.app.run_screen import RunScreen  # noqa: E402
from leafe_tui.app.worker import ExplorerUpdate  # noqa: E402

SIZE = (120, 40)


def _step(store: Store, run_id: int, branch_id: int, parent: Node, rng: random.Random, last: bool) -> Node:
    success = last and rng.random() < 0.2
    return store.add_node(
        run_id=run_id,
        branch_id=branch_id,
        parent_id=parent.id,
        step=parent.step + 1,
        action=rng.choice(["up", "down", "left", "right", "print(solve(read()))"]),
        raw_response="<think>…</think>\n<action>up</action>",
        thought="…",
        valid=rng.random() > 0.05,
        observation=f"observation after step {parent.step + 1}",
        feedback="Success!" if success else ("Episode over." if last else "Moved."),
        reward=1.0 if success else 0.0,
        done=last,
        success=success,
        prompt_tokens=400 + 40 * parent.step,
        cached_tokens=360 + 40 * parent.step,
        generated_tokens=12,
        seconds=0.2,
    )


def build_run(path: Path, nodes: int, seed: int = 0) -> int:
    """A run of ``nodes`` steps: a root episode, then branches of 4-12 steps from random earlier steps."""
    rng = random.Random(seed)
    store = Store(path)
    with store.db.atomic():  # one transaction: building is not what is measured
        run_id, root = store.create_run(
            "sokoban/synthetic", "sokoban", "synthetic", "none", {"budget": 10_000}, "start"
        )
        root_branch = store.branch(root.branch_id)
        steps: list[Node] = []
        parent, branch_id, depth = root, root_branch.id, {root_branch.id: 0}
        count = 0
        while count < nodes:
            length = min(rng.randint(4, 12), nodes - count)
            for i in range(length):
                parent = _step(store, run_id, branch_id, parent, rng, last=i == length - 1)
                steps.append(parent)
                count += 1
            store.set_branch_status(branch_id, "done", "success" if parent.success else "failure")
            if count >= nodes:
                break
            fork = rng.choice(steps[-400:])  # mostly recent branches: a deep, bushy tree
            branch = store.add_branch(
                run_id,
                "rollback",
                fork.id,
                depth[fork.branch_id] + 1,
                parent_branch_id=fork.branch_id,
                rollback_step=fork.step + 1,
                summary=f"lesson {len(depth)}: try another way at step {fork.step + 1}",
                status="running",
            )
            depth[branch.id] = depth[fork.branch_id] + 1
            parent, branch_id = fork, branch.id
        store.set_run_status(run_id, "finished")
    store.close()
    return run_id


async def until(pilot, condition, limit: float = 120.0) -> None:
    started = time.perf_counter()
    while not condition():
        if time.perf_counter() - started > limit:
            raise TimeoutError("the app did not get there in time")
        await pilot.pause(0.001)


def drawn(tree, keys) -> bool:
    """Every key has a TreeNode with a line in the built tree (it is on screen when scrolled to)."""
    _ = tree.last_line  # builds the lines if they are stale
    return all(k in tree.tnodes and tree.tnodes[k].line >= 0 for k in keys)


async def key_work(screen: RunScreen) -> float:
    """Mean time of the work one navigation key does (action, line build, inspector), rendering aside."""
    tree = screen.run_tree
    actions = ["cursor_down", "next_success", "next_rollback", "step_next", "step_prev", "last_step"]
    actions += ["first_step", "next_sibling", "cursor_up", "root"]
    started = time.perf_counter()
    for action in actions * 3:
        await tree.run_action(action)
        _ = tree.last_line
        screen.inspector.show(tree.current)
    return (time.perf_counter() - started) / (len(actions) * 3)


async def live_update(app: LeafeApp, pilot, run_id: int, update: int, fork_at: int) -> tuple[float, list]:
    """Insert a branch of ``update`` steps through a second Store, post the events, time until drawn."""
    screen: RunScreen = app.screen  # type: ignore[assignment]
    tree = screen.run_tree
    writer = Store(app.db_path)
    fork = writer.node(fork_at)
    branch = writer.add_branch(
        run_id, "rollback", fork.id, 1, parent_branch_id=fork.branch_id, rollback_step=fork.step + 1
    )
    writer.set_branch_status(branch.id, "running")
    new: list[Node] = []
    parent, rng = fork, random.Random(1)
    for i in range(update):
        parent = _step(writer, run_id, branch.id, parent, rng, last=i == update - 1)
        new.append(parent)
    writer.close()
    events = [ExplorerEvent("branch", run_id, {"id": branch.id, "status": "running"})]
    events += [ExplorerEvent("node", run_id, dict(n.__dict__)) for n in new]
    wanted = [branch_key(branch.id)] + [node_key(n.id) for n in new]
    cursor = tree.cursor_node
    started = time.perf_counter()
    for event in events:
        app.post_message(ExplorerUpdate(event))
    await until(pilot, lambda: drawn(tree, wanted))
    await pilot.pause()
    elapsed = time.perf_counter() - started
    assert tree.cursor_node is cursor, "the cursor moved"
    return elapsed, wanted


async def rebuild(app: LeafeApp, pilot, run_id: int, wanted: list, expanded: bool) -> float:
    """The baseline: re-read the run and rebuild the tree in the same fold state, until drawn."""
    screen: RunScreen = app.screen  # type: ignore[assignment]
    tree = screen.run_tree
    started = time.perf_counter()
    index = RunIndex.load(screen.store, run_id)
    screen.index = tree.index = screen.inspector.index = index
    tree.eager_limit = 10**9 if expanded else tree.eager_limit
    tree.build()
    for key in wanted:
        tree.reveal(key)
    await until(pilot, lambda: drawn(tree, wanted))
    await pilot.pause()
    return time.perf_counter() - started


async def measure(db: Path, run_id: int, update: int) -> dict[str, float]:
    figures: dict[str, float] = {}
    started = time.perf_counter()
    app = LeafeApp(db, run_id=run_id)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, RunScreen) and app.screen.run_tree.tnodes)
        screen: RunScreen = app.screen  # type: ignore[assignment]
        tree = screen.run_tree
        await pilot.pause()
        figures["open"] = time.perf_counter() - started
        figures["built_entries"] = len(tree.tnodes)
        figures["key_lazy"] = await key_work(screen)
        tree.action_root()
        root_steps = screen.index.steps[1]
        figures["live_lazy"], wanted = await live_update(app, pilot, run_id, update, root_steps[2])
        figures["rebuild_lazy"] = await rebuild(app, pilot, run_id, wanted, expanded=False)

        started = time.perf_counter()
        tree.action_expand_all()
        await until(pilot, lambda: tree.last_line + 1 == len(tree.tnodes))
        await pilot.pause()
        figures["expand_all"] = time.perf_counter() - started
        figures["entries"] = len(tree.tnodes)
        figures["key_expanded"] = await key_work(screen)
        tree.action_root()
        figures["live_expanded"], wanted = await live_update(app, pilot, run_id, update, root_steps[3])
        figures["rebuild_expanded"] = await rebuild(app, pilot, run_id, wanted, expanded=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--update", type=int, default=50)
    parser.add_argument("--db", type=Path, help="keep the synthetic database here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "big.db"
        db.unlink(missing_ok=True)
        started = time.perf_counter()
        run_id = build_run(db, args.nodes)
        built = time.perf_counter() - started
        store = Store(db)
        branches = len(store.branches(run_id))
        store.close()
        f = asyncio.run(measure(db, run_id, args.update))
    n = args.update + 1
    print(f"synthetic run: {args.nodes} steps, {branches} branches (written in {built:.1f} s)")
    print(
        f"open in the app until the tree is drawn  {f['open']:7.3f} s   "
        f"({f['built_entries']:.0f} entries built lazily)"
    )
    print(f"work per navigation key, lazy tree       {f['key_lazy'] * 1000:7.1f} ms")
    print(f"expand all ({f['entries']:.0f} entries)               {f['expand_all']:7.3f} s")
    print(f"work per navigation key, all expanded    {f['key_expanded'] * 1000:7.1f} ms")
    print(f"live update: {args.update} nodes + 1 branch ({n} events), applied in place, until drawn:")
    for state in ("lazy", "expanded"):
        live, full = f[f"live_{state}"], f[f"rebuild_{state}"]
        print(
            f"  {state:8} tree: in place {live:6.3f} s | baseline, one full rebuild {full:6.3f} s "
            f"(ratio {full / live:4.1f}x); rebuilding on every event: ~{n * full:5.1f} s "
            f"({n * full / live:4.0f}x)"
        )


if __name__ == "__main__":
    main()
