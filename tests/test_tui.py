"""The Textual app driven with Pilot over real databases written by the explorer (scripted backend).

Every test runs the real app (``App.run_test``) and checks the store and the Messages the app
posts; waits are on the app's own events (``pilot.pause``, the worker's end), never on sleeps.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from textual.command import CommandList
from textual.message import Message
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import HelpPanel, Markdown, TextArea
from typer.testing import CliRunner

from engine.backends.base import BackendError
from engine.backends.scripted import ScriptedBackend
from engine.events import NodeCommitted
from engine.explorer import ExploreConfig, Explorer
from engine.specs import ModelSpec
from engine.store import Store
from leafe_tui.app import ExploreJob, LeafeApp
from leafe_tui.app.compare import CompareScreen, CompareTable
from leafe_tui.app.keys import load_keymap, parse_keymap
from leafe_tui.app.model import branch_key, node_key
from leafe_tui.app.review import ReviewChanged
from leafe_tui.app.run_screen import RunScreen
from leafe_tui.app.runs import RunsScreen, RunsTable
from leafe_tui.app.summary_editor import SummaryEditor, SummarySaved
from leafe_tui.app.tree_view import RunTree
from leafe_tui.app.worker import ExplorerUpdate, WorkFailed, WorkFinished
from leafe_tui.config import ConfigError
from tests.doubles import PathTestEnv, act, is_reflection, reflect

TASK = "path/abcd"
CONFIG = {"budget": 5, "max_depth": 2, "reflect_every": 2}
SCRIPTED = ModelSpec(backend="scripted", model="scripted")
CAREFUL = "be careful: check every letter before writing it"
HURRY = "hurry: write the letters quickly"
WRITE_C = "at step 3 write 'c'"
SIZE = (120, 40)


class Gate:
    """Lets the scripted model answer only as many calls as the test allows (open after 20 s)."""

    def __init__(self) -> None:
        self._calls = threading.Semaphore(0)
        self._open = threading.Event()

    def wait(self) -> None:
        for _ in range(400):
            if self._open.is_set() or self._calls.acquire(timeout=0.05):
                return

    def allow(self, calls: int) -> None:
        for _ in range(calls):
            self._calls.release()

    def open(self) -> None:
        self._open.set()


def tree_policy(gate: Gate | None = None) -> Callable[[list[dict[str, str]]], str]:
    """A scripted agent that grows a small but complete tree on ``path/abcd`` (budget 5, K=2).

    Root episode: a, b (periodic reflection: roll back to 2, "careful"), x fails (roll back to 2,
    "hurry"). Branch #2 (careful) solves it. Branch #3 (hurry) writes y at step 3 and fails; its
    reflection asks for branch #4 from step 3 ("write 'c'"), which solves it. A restart (#5) starts
    with an unparsable reply and fails. #2 and #3 are siblings that part at step 3.
    """
    first_steps = itertools.count()

    def reply(messages: list[dict[str, str]]) -> str:
        if gate is not None:
            gate.wait()
        replies = [m["content"] for m in messages if m["role"] == "assistant"]
        guidance = " ".join(m["content"] for m in messages if m["role"] == "user")
        restart = any("not sure" in r for r in replies)
        if is_reflection(messages):
            if restart or CAREFUL in guidance or WRITE_C in guidance:
                return reflect("none")
            if HURRY in guidance:
                return reflect(3, WRITE_C) if len(replies) == 3 else reflect("none")
            return {2: reflect(2, CAREFUL), 3: reflect(2, HURRY)}.get(len(replies), reflect("none"))
        step = len(replies) + 1
        if restart:
            return act("abx"[step - 2])
        if step == 1:
            return act("a") if next(first_steps) == 0 else "I am not sure what to do"
        if CAREFUL in guidance or WRITE_C in guidance:
            return act("abcd"[step - 1])
        if HURRY in guidance:
            return act("by"[step - 2])
        return act("abx"[step - 1])

    return reply


def build_db(path: Path) -> Path:
    """The reference database: one finished run of the policy above."""
    store = Store(path)
    backend = ScriptedBackend(reply_fn=tree_policy())
    Explorer(store, backend, PathTestEnv(), ExploreConfig(**CONFIG)).start(TASK, "scripted")
    store.close()
    return path


def make_app(db: Path, gate: Gate | None = None, **kwargs) -> LeafeApp:
    return LeafeApp(
        db,
        backend_factory=lambda model: ScriptedBackend(reply_fn=tree_policy(gate)),
        env_factory=lambda task: PathTestEnv(),
        **kwargs,
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return build_db(tmp_path / "leafe.db")


def run(body) -> None:
    asyncio.run(body)


async def until(pilot: Pilot, condition: Callable[[], object], what: str, rounds: int = 400) -> None:
    """Let the app work until ``condition`` holds (each round processes pending messages)."""
    for _ in range(rounds):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def run_screen_ready(app: LeafeApp) -> bool:
    return isinstance(app.screen, RunScreen) and bool(app.screen.query(RunTree))


async def open_run(pilot: Pilot) -> RunScreen:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, RunsScreen), "the runs list")
    await pilot.press("enter")
    await until(pilot, lambda: run_screen_ready(app), "the run screen")
    await pilot.pause()
    return app.screen  # type: ignore[return-value]


async def press(pilot: Pilot, *keys: str) -> None:
    await pilot.press(*keys)
    await pilot.pause()


def received(messages: list[Message], kind: type[Message]) -> list:
    """Messages of ``kind`` in order, once each (a bubbling message reaches several handlers)."""
    return list({id(m): m for m in messages if isinstance(m, kind)}.values())


def keys_of(kind: str, keys: Iterable[tuple[str, int]]) -> set[int]:
    return {ident for k, ident in keys if k == kind}


# --- runs list and tree -------------------------------------------------------------------------
def test_runs_list_opens_the_tree_with_outcomes_and_summaries(db: Path) -> None:
    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            await until(pilot, lambda: isinstance(pilot.app.screen, RunsScreen), "runs list")
            table = pilot.app.screen.query_one(RunsTable)
            assert table.row_count == 1
            await pilot.click(RunsTable, offset=(5, 1))  # the mouse: highlight, then select
            await pilot.click(RunsTable, offset=(5, 1))
            await until(pilot, lambda: run_screen_ready(pilot.app), "the run screen")
            screen: RunScreen = pilot.app.screen  # type: ignore[assignment]
            tree = screen.run_tree
            await pilot.pause()
            await pilot.click("#run-tree", offset=(20, 5))
            await pilot.pause()
            assert tree.current == tree.get_node_at_line(5).data == screen.inspector.key
            store = Store(db)
            assert keys_of("node", tree.tnodes) == {n.id for n in store.nodes(1)}
            assert keys_of("branch", tree.tnodes) == {b.id for b in store.branches(1)}
            success = next(n for n in store.nodes(1) if n.success)
            assert "✓" in tree.tnodes[node_key(success.id)].label.plain
            hurry = tree.tnodes[branch_key(3)].label.plain
            assert "hurry" in hurry and "τ=2" in hurry and "failure" in hurry
            assert "↺ 2 branches" in tree.tnodes[node_key(2)].label.plain  # the rollback point
            invalid = next(n for n in store.nodes(1) if not n.valid)
            assert "⚠" in tree.tnodes[node_key(invalid.id)].label.plain
            # the branches rolling back to step 2 hang under step 1
            assert tree.tnodes[branch_key(3)].parent is tree.tnodes[node_key(2)]

    run(body())


def test_tree_jumps_and_folds(db: Path) -> None:
    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            screen = await open_run(pilot)
            tree, index = screen.run_tree, screen.index
            await press(pilot, "b")
            assert tree.current is not None and index.is_rollback_point(tree.current[1])
            first = tree.current
            await press(pilot, "b")
            assert tree.current != first and index.is_rollback_point(tree.current[1])
            await press(pilot, "n")
            assert index.nodes[tree.current[1]].success
            await press(pilot, "g")
            assert tree.current == node_key(index.root_id)
            lines = tree.last_line
            await press(pilot, "j")  # the root episode
            assert tree.current == branch_key(1)
            await press(pilot, "space")
            assert not tree.tnodes[branch_key(1)].is_expanded and tree.last_line < lines
            await press(pilot, "space")
            assert tree.last_line == lines
            await press(pilot, "minus")
            assert all(not t.is_expanded for t in tree.root.children)
            await press(pilot, "plus")
            assert tree.last_line == lines

    run(body())


def test_stepping_along_a_trajectory_updates_the_inspector(db: Path) -> None:
    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            screen = await open_run(pilot)
            tree, index, inspector = screen.run_tree, screen.index, screen.inspector
            assert "the first observation" in inspector.text

            def step() -> int:
                assert tree.current is not None and tree.current[0] == "node"
                return index.nodes[tree.current[1]].step

            await press(pilot, "l", "l")
            assert step() == 2 and inspector.key == tree.current
            text = inspector.text
            for part in (
                "Action (parsed)",
                "Model reply (raw)",
                "<action>b</action>",
                "Feedback",
                "Correct.",
            ):
                assert part in text
            assert "prompt" in text and "cached" in text and "reused" in text  # tokens and cache reuse
            assert "Reflection at this step" in text and "roll back to step 2" in text
            await press(pilot, "right")
            assert step() == 3 and "Wrong letter" in inspector.text
            await press(pilot, "h")
            assert step() == 2
            await press(pilot, "dollar_sign")
            assert step() == 3
            await press(pilot, "0")
            assert step() == 1
            # into branch #3 (second fork of step 1): child, then next sibling
            await press(pilot, "d")
            assert tree.current == branch_key(2)
            assert "Summary as generated" in inspector.text and CAREFUL in inspector.text
            await press(pilot, "s")
            assert tree.current == branch_key(3)
            await press(pilot, "l", "l")
            assert step() == 3 and index.nodes[tree.current[1]].action == "y"
            text = inspector.text
            assert "Branch #3" in text and "rollback to step 2" in text and HURRY in text
            assert "reflected at" in text and "step 3 of branch #1" in text
            await press(pilot, "h", "h")
            assert step() == 1 and index.nodes[tree.current[1]].branch_id == 1  # back in the root episode
            await press(pilot, "u")
            assert tree.current == branch_key(1)

    run(body())


# --- summaries and re-branching -----------------------------------------------------------------
def test_editing_a_summary_keeps_the_original_and_every_edit(db: Path) -> None:
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await open_run(pilot)
            screen.run_tree.go(branch_key(3))
            await press(pilot, "e")
            editor = pilot.app.screen
            assert isinstance(editor, SummaryEditor) and editor.query_one(TextArea).text == HURRY
            editor.query_one(TextArea).text = "hurry, but check the third letter"
            await press(pilot, "ctrl+s")
            assert isinstance(pilot.app.screen, RunScreen)
            await press(pilot, "e")
            pilot.app.screen.query_one(TextArea).text = "write c at step 3"
            await press(pilot, "ctrl+s")
            assert "✎ edited" in screen.run_tree.tnodes[branch_key(3)].label.plain
            assert "write c at step 3" in screen.inspector.text

    run(body())
    store = Store(db)
    branch = store.branch(3)
    assert branch.summary == HURRY and branch.summary_edited == "write c at step 3"
    assert branch.summary_edited_at is not None
    edits = store.summary_edits(3)
    assert [e["text"] for e in edits] == ["hurry, but check the third letter", "write c at step 3"]
    assert all(e["created_at"] for e in edits)
    saved = received(messages, SummarySaved)
    assert [(m.branch_id, m.text) for m in saved] == [(3, e["text"]) for e in edits]


def test_rebranch_explores_a_new_sibling_and_leaves_the_old_branch_alone(db: Path) -> None:
    before = Store(db)
    old, old_nodes = before.branch(3), before.branch_nodes(3)
    branches_before = {b.id for b in before.branches(1)}
    messages: list[Message] = []
    text = f"{CAREFUL} (edited)"

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await open_run(pilot)
            screen.run_tree.go(node_key(old_nodes[0].id))  # a step of branch #3
            await press(pilot, "R")
            editor = pilot.app.screen
            assert isinstance(editor, SummaryEditor) and editor.rebranch_first
            editor.query_one(TextArea).text = text
            await press(pilot, "ctrl+r")
            await pilot.app.wait_for_work()
            await until(pilot, lambda: any(isinstance(m, WorkFinished) for m in messages), "the end")
            new_ids = {b.id for b in Store(db).branches(1)} - branches_before
            assert len(new_ids) == 1
            new = new_ids.pop()
            tree = screen.run_tree
            assert tree.tnodes[branch_key(new)].parent is tree.tnodes[node_key(old.from_node_id)]
            assert all(node_key(n.id) in tree.tnodes for n in Store(db).branch_nodes(new))
            assert tree.current == node_key(old_nodes[0].id)  # the cursor stayed

    run(body())
    after = Store(db)
    assert after.branch(3) == old and after.branch_nodes(3) == old_nodes
    new = after.branches(1)[-1]
    assert (new.origin, new.rebranch_of, new.kind) == ("person", 3, "rollback")
    assert new.from_node_id == old.from_node_id and new.rollback_step == old.rollback_step
    assert new.summary == HURRY and new.summary_edited == text
    assert (new.status, new.outcome) == ("done", "success")
    assert [n.action for n in after.branch_nodes(new.id)] == ["b", "c", "d"]
    assert after.get_run(1)["config"]["budget"] == 6  # one more episode, recorded
    assert any(isinstance(m, ExplorerUpdate) and isinstance(m.event, NodeCommitted) for m in messages)


# --- review and filters ---------------------------------------------------------------------------
def test_approve_reject_and_bulk_approval(db: Path) -> None:
    messages: list[Message] = []

    async def body() -> None:
        async with make_app(db).run_test(size=SIZE, message_hook=messages.append) as pilot:
            screen = await open_run(pilot)
            screen.run_tree.go(branch_key(4))
            await press(pilot, "x")  # reject #4 (successful)
            screen.run_tree.go(branch_key(3))
            await press(pilot, "a", "a")  # approve #3, then back to pending
            await press(pilot, "a")
            await press(pilot, "A")  # every pending successful branch: #2 (not #4: rejected)
            status = screen.query_one("#run-status").render()
            assert "2 approved" in str(status) and "1 rejected" in str(status)
            assert "✔ approved" in screen.run_tree.tnodes[branch_key(2)].label.plain

    run(body())
    store = Store(db)
    assert {b.id: b.review for b in store.branches(1)} == {
        1: "pending",
        2: "approved",
        3: "approved",
        4: "rejected",
        5: "pending",
    }
    reviews = [(m.branch_ids, m.review) for m in received(messages, ReviewChanged)]
    assert reviews == [
        ([4], "rejected"),
        ([3], "approved"),
        ([3], "pending"),
        ([3], "approved"),
        ([2], "approved"),
    ]


def test_filters_change_the_visible_branches_and_show_counts(db: Path) -> None:
    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            screen = await open_run(pilot)
            tree = screen.run_tree
            screen.run_tree.go(branch_key(2))
            await press(pilot, "a")

            def status() -> str:
                return str(screen.query_one("#run-status").render())

            await press(pilot, "f")
            assert tree.filter == "pending" and "filter: pending" in status()
            assert keys_of("branch", tree.tnodes) == {1, 3, 4, 5}
            await press(pilot, "f")
            assert keys_of("branch", tree.tnodes) == {1, 2}  # #2 and the episode it hangs from
            assert "1 approved" in status() and "4 pending" in status() and "2 successful" in status()
            restart_steps = {n for n in screen.index.steps[5]}
            assert not restart_steps & keys_of("node", tree.tnodes)
            await press(pilot, "f")
            assert tree.filter == "successful" and keys_of("branch", tree.tnodes) == {1, 2, 3, 4}
            await press(pilot, "f")
            assert tree.filter == "all" and keys_of("branch", tree.tnodes) == {1, 2, 3, 4, 5}

    run(body())


# --- compare --------------------------------------------------------------------------------------
def test_compare_siblings_highlights_where_they_part(db: Path) -> None:
    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            screen = await open_run(pilot)
            screen.run_tree.go(branch_key(2))
            await press(pilot, "c")
            compare = pilot.app.screen
            assert isinstance(compare, CompareScreen)
            comparison = compare.comparison
            assert (comparison.left.id, comparison.right.id) == (2, 3)
            assert comparison.divergence_step == 3
            row = comparison.rows[comparison.divergence]
            assert (row.left.action, row.right.action) == ("c", "y")
            assert [r.step for r in comparison.rows if r.shared] == [1]
            table = compare.query_one(CompareTable)
            marked = table.get_row(str(comparison.divergence))
            assert marked[0].plain.startswith("▶") and "bold black on yellow" in str(marked[1].spans)
            await press(pilot, "w")
            assert (compare.comparison.left.id, compare.comparison.right.id) == (3, 2)
            await press(pilot, "escape")
            assert pilot.app.screen is screen

    run(body())


# --- live work ------------------------------------------------------------------------------------
def test_live_exploration_grows_the_tree_in_place_and_keeps_the_cursor(tmp_path: Path) -> None:
    gate = Gate()
    job = ExploreJob("start", tasks=(TASK,), model_spec=SCRIPTED, config=CONFIG)
    db = tmp_path / "live.db"

    messages: list[Message] = []

    async def body() -> None:
        app = make_app(db, gate, job=job)
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await until(pilot, lambda: run_screen_ready(app), "the new run to open")
            screen: RunScreen = app.screen  # type: ignore[assignment]
            tree = screen.run_tree
            gate.allow(1)
            await until(pilot, lambda: len(screen.index.steps[1]) == 1, "step 1")
            await press(pilot, "l")  # the cursor onto step 1
            anchor = tree.current
            anchor_node = tree.cursor_node
            assert anchor is not None and screen.index.nodes[anchor[1]].step == 1
            gate.allow(4)  # step 2, a reflection (queues a branch under step 1), step 3, a reflection

            def grown() -> list:
                return [key for m in received(messages, RunTree.Grew) for key in m.added]

            await until(pilot, lambda: branch_key(3) in grown(), "the second branch, live")
            assert app.busy and len(screen.index.steps[1]) == 3
            assert all(node_key(i) in tree.tnodes for i in screen.index.steps[1])
            assert tree.tnodes[branch_key(2)].parent is anchor_node
            assert tree.cursor_node is anchor_node and tree.current == anchor  # not rebuilt, not moved
            assert grown() == [node_key(2), node_key(3), branch_key(2), node_key(4), branch_key(3)]
            gate.open()
            await app.wait_for_work()
            await pilot.pause()
            store = Store(db)
            assert keys_of("node", tree.tnodes) == {n.id for n in store.nodes(1)}
            assert keys_of("branch", tree.tnodes) == {b.id for b in store.branches(1)}
            assert tree.cursor_node is anchor_node
            assert "finished" in str(screen.query_one("#run-status").render())

    run(body())
    reference = Store(build_db(tmp_path / "reference.db"))
    live = Store(db)
    shape = [(b.kind, b.status, b.outcome, b.summary) for b in reference.branches(1)]
    assert [(b.kind, b.status, b.outcome, b.summary) for b in live.branches(1)] == shape


def test_an_ungated_exploration_ends_with_every_node_in_the_tree(tmp_path: Path) -> None:
    """Events that arrive before the run's screen is composed are not lost."""
    db = tmp_path / "fast.db"
    job = ExploreJob("start", tasks=(TASK, TASK), model_spec=SCRIPTED, config=CONFIG)

    async def body() -> None:
        app = make_app(db, job=job)
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: run_screen_ready(app), "the first run to open")
            await app.wait_for_work()
            await until(pilot, lambda: app.work is None, "the end of the work")
            tree = app.screen.run_tree
            assert keys_of("node", tree.tnodes) == {n.id for n in Store(db).nodes(1)}
            await press(pilot, "escape")
            assert pilot.app.screen.query_one(RunsTable).row_count == 2

    run(body())


def test_stopping_work_leaves_a_resumable_run(tmp_path: Path) -> None:
    gate = Gate()
    db = tmp_path / "stop.db"
    messages: list[Message] = []
    job = ExploreJob("start", tasks=(TASK,), model_spec=SCRIPTED, config=CONFIG)

    async def body() -> None:
        app = make_app(db, gate, job=job)
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await until(pilot, lambda: run_screen_ready(app), "the new run to open")
            screen: RunScreen = app.screen  # type: ignore[assignment]
            gate.allow(1)
            await until(pilot, lambda: len(screen.index.steps[1]) == 1, "step 1")
            await press(pilot, "ctrl+x")
            assert app.work is not None and app.work.stopping
            gate.open()
            await app.wait_for_work()
            await until(pilot, lambda: any(isinstance(m, WorkFinished) for m in messages), "the stop")
            finished = next(m for m in messages if isinstance(m, WorkFinished))
            assert finished.stopped and not app.busy
            assert Store(db).get_run(1)["status"] == "stopped"
            assert Store(db).run_totals(1)["steps"] <= 2  # stopped between steps
            await press(pilot, "ctrl+r")  # resume from the tree
            await app.wait_for_work()
            await until(pilot, lambda: app.work is None, "the resumed run to end")
            assert Store(db).get_run(1)["status"] == "finished"
            assert keys_of("node", screen.run_tree.tnodes) == {n.id for n in Store(db).nodes(1)}

    run(body())
    assert Store(db).run_totals(1)["steps"] == Store(build_db(tmp_path / "ref.db")).run_totals(1)["steps"]


def test_errors_become_notifications(tmp_path: Path) -> None:
    messages: list[Message] = []

    def broken(spec: ModelSpec) -> ScriptedBackend:
        raise BackendError(f"could not load {spec.model}: not a GGUF file")

    job = ExploreJob("start", tasks=(TASK,), model_spec=ModelSpec(model="broken.gguf"), config=CONFIG)
    app = LeafeApp(tmp_path / "e.db", backend_factory=broken, env_factory=lambda task: PathTestEnv(), job=job)

    async def body() -> None:
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await app.wait_for_work()
            await until(pilot, lambda: any(isinstance(m, WorkFailed) for m in messages), "the failure")
            await pilot.pause()
            assert isinstance(app.screen, RunsScreen) and app.work is None
            errors = [m.notification for m in messages if isinstance(m, Notify)]
            assert any(n.severity == "error" and "not a GGUF file" in n.message for n in errors)

    run(body())


# --- keys, palette, help --------------------------------------------------------------------------
def test_keys_remapped_from_the_config_file(
    db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "leafe.toml"
    config.write_text('[tui.keys]\n"run.approve" = "y"\n"tree.step_next" = ["ctrl+f", "l"]\n')
    monkeypatch.setenv("LEAFE_CONFIG", str(config))
    keymap = load_keymap()
    assert keymap == {"run.approve": "y", "tree.step_next": "ctrl+f,l"}

    async def body() -> None:
        async with make_app(db, keymap=keymap).run_test(size=SIZE) as pilot:
            screen = await open_run(pilot)
            await press(pilot, "ctrl+f")
            assert (
                screen.run_tree.current is not None
                and screen.index.nodes[screen.run_tree.current[1]].step == 1
            )
            screen.run_tree.go(branch_key(2))
            await press(pilot, "a")  # no longer bound
            assert Store(db).branch(2).review == "pending"
            await press(pilot, "y")
            assert Store(db).branch(2).review == "approved"

    run(body())
    # the CLI reads the same file without complaining about the [tui.keys] table
    from leafe_tui.cli import app as cli

    result = CliRunner().invoke(cli, ["runs", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    with pytest.raises(ConfigError, match="unknown binding id"):
        parse_keymap({"tree.fly": "f"})


def test_command_palette_runs_app_commands(db: Path) -> None:
    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            await open_run(pilot)
            await press(pilot, "ctrl+p")
            await pilot.press(*"approve every")
            hits = pilot.app.screen.query_one(CommandList)
            await until(pilot, lambda: hits.option_count > 0, "palette hits")
            await press(pilot, "enter")
            await until(pilot, lambda: Store(db).branch(2).review == "approved", "bulk approval")
            assert Store(db).branch(4).review == "approved" and Store(db).branch(3).review == "pending"

    run(body())


def test_f1_shows_help_for_the_focused_widget(db: Path) -> None:
    async def body() -> None:
        async with make_app(db).run_test(size=SIZE) as pilot:
            await open_run(pilot)
            await press(pilot, "f1")
            panel = pilot.app.screen.query_one(HelpPanel)
            await pilot.pause()
            assert "Rollback tree" in panel.query_one(Markdown).source
            await press(pilot, "f1")
            assert not pilot.app.screen.query(HelpPanel)

    run(body())


def test_cli_tui_user_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    from leafe_tui.cli import app as cli

    runner = CliRunner()
    result = runner.invoke(cli, ["tui", "--db", str(tmp_path / "missing.db")])
    assert result.exit_code == 2 and "no database" in result.output
    result = runner.invoke(cli, ["explore", "nosuch/task", "--tui", "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "error" in result.output


def test_a_rebranch_reflects_with_the_runs_own_reflection_model(db: Path) -> None:
    """The TUI reopens the reflection model the run recorded, not the actor, for what it explores."""
    store = Store(db)
    store.db.execute(
        "update runs set reflect_spec = ?", [ModelSpec(backend="scripted", model="judge").to_json()]
    )
    store.db.conn.commit()
    old_nodes = store.branch_nodes(3)
    reflections_before = {r["id"] for r in store.reflections(1)}
    opened: list[str] = []

    def factory(spec: ModelSpec) -> ScriptedBackend:
        opened.append(spec.model)
        backend = ScriptedBackend(reply_fn=tree_policy())
        backend.name = f"scripted:{spec.model}"
        return backend

    messages: list[Message] = []
    app = LeafeApp(db, backend_factory=factory, env_factory=lambda task: PathTestEnv())

    async def body() -> None:
        async with app.run_test(size=SIZE, message_hook=messages.append) as pilot:
            await open_run(pilot)
            pilot.app.screen.run_tree.go(node_key(old_nodes[0].id))
            await press(pilot, "R")
            pilot.app.screen.query_one(TextArea).text = "write b at step 2, then check the word"
            await press(pilot, "ctrl+r")
            await pilot.app.wait_for_work()
            await until(pilot, lambda: any(isinstance(m, WorkFinished) for m in messages), "the end")

    run(body())
    assert "judge" in opened
    new = [r for r in Store(db).reflections(1) if r["id"] not in reflections_before]
    assert new and {r["model"] for r in new} == {"scripted:judge"}
