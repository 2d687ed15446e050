"""Everything stored about the entry under the tree's cursor: a step or a branch.

A step shows the observation, the model's raw reply and the parsed action, the environment's
feedback, the outcome, token counts with cache reuse and timing, a reflection made there, and the
reflection that created its branch (where, τ, the summary as generated and as edited).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from engine.store import Branch, Node, Store
from leafe_tui.app.model import Key, RunIndex
from leafe_tui.display_text import reflow
from leafe_tui.render import node_symbol


def _plain(value: object) -> str:
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def _heading(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


def _block(text: str | None, style: str = "") -> Text:
    return Text(text if text else "—", style=style if text else "dim")


def _facts(rows: list[tuple[str, str | Text]]) -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    return table


def cost_line(row: dict[str, Any] | Node) -> str:
    """Tokens, cache reuse and time of one model call."""
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    prompt, cached = get("prompt_tokens") or 0, get("cached_tokens") or 0
    generated, seconds = get("generated_tokens") or 0, get("seconds") or 0.0
    reuse = f" ({100 * cached / prompt:.0f}% reused)" if prompt else ""
    rate = f", {generated / seconds:.1f} tok/s" if seconds else ""
    return (
        f"prompt {prompt} tok, cached {cached}{reuse}, evaluated {prompt - cached}; "
        f"generated {generated} tok; {seconds:.2f} s{rate}"
    )


class Inspector(VerticalScroll):
    """Details of the entry under the cursor (scroll with the arrow keys when focused)."""

    HELP = """
## Inspector
Everything the store holds about the entry under the tree's cursor.

- a **step**: observation, raw reply, parsed action, feedback, outcome, tokens / cache reuse /
  time, the reflection made at that step, and the reflection that created its branch;
- a **branch**: where its reflection happened, the rollback step τ, the summary as generated and
  as edited (every edit with its time), its review state and its cost.

Arrow keys and PgUp/PgDn scroll; `tab` goes back to the tree.
"""
    can_focus = True

    def __init__(self, index: RunIndex, store: Store, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = index
        self.store = store
        self.key: Key | None = None
        self._renderable: RenderableType = Text("")
        self.body = Static(id="inspector-body")

    def compose(self) -> ComposeResult:
        yield self.body

    def show(self, key: Key | None) -> None:
        self.key = key
        renderable = self._render_key(key)
        self.body.update(renderable)
        self._renderable = renderable
        self.scroll_home(animate=False)

    @property
    def text(self) -> str:
        """What is shown, as plain text (for tests and for copying)."""
        return _plain(self._renderable)

    def refresh_key(self) -> None:
        self.show(self.key)

    def _render_key(self, key: Key | None) -> RenderableType:
        if key is None or (key[0] == "node" and key[1] not in self.index.nodes):
            return Text("nothing selected", style="dim")
        if key[0] == "branch":
            return self._branch(self.index.branches[key[1]], own=True)
        return self._node(self.index.nodes[key[1]])

    # --- a step -------------------------------------------------------------------------------
    def _node(self, node: Node) -> RenderableType:
        if node.step == 0:
            return Group(
                Text(f"Step 0 · the first observation of {self.index.run['task_id']}", style="bold"),
                _heading("Observation"),
                _block(reflow(node.observation)),
            )
        symbol, style = node_symbol(node.__dict__)
        outcome = (
            "success"
            if node.success
            else "invalid action"
            if not node.valid
            else "ended"
            if node.done
            else "continues"
        )
        title = Text.assemble(
            (f"Step {node.step} ", "bold"),
            (f"{symbol} {outcome}", style),
            (f"   node {node.id} · branch #{node.branch_id}", "dim"),
        )
        parts: list[RenderableType] = [
            title,
            _facts(
                [
                    ("valid", "yes" if node.valid else "no"),
                    ("reward", f"{node.reward:g}"),
                    ("done", "yes" if node.done else "no"),
                    ("success", "yes" if node.success else "no"),
                    ("cost", cost_line(node)),
                ]
            ),
            _heading("Action (parsed)"),
            _block(node.action, "bold"),
        ]
        if node.thought:
            parts += [_heading("Thought"), _block(node.thought, "italic")]
        parts += [_heading("Feedback"), _block(node.feedback)]
        if node.info:  # what the environment reported beyond the text: score, progress, …
            parts += [_heading("Environment"), _facts([(str(k), _plain(v)) for k, v in node.info.items()])]
        parts += [
            _heading("Model reply (raw)"),
            _block(node.raw_response),
            _heading("Observation after the step"),
            _block(reflow(node.observation)),
        ]
        reflection_id = self.index.reflection_at.get(node.id)
        if reflection_id is not None:
            parts += [
                _heading("Reflection at this step"),
                self._reflection(self.index.reflections[reflection_id]),
            ]
        branch = self.index.branches.get(node.branch_id)
        if branch is not None:
            parts += [_heading(f"Branch #{branch.id}"), self._branch(branch, own=False)]
        return Group(*parts)

    def _reflection(self, row: dict[str, Any]) -> RenderableType:
        if row.get("parse_error"):
            verdict = Text(f"unparsable: {row['parse_error']}", style="magenta")
        elif row.get("rollback_step") is None:
            verdict = Text("no rollback", style="dim")
        else:
            verdict = Text(f"roll back to step {row['rollback_step']}", style="cyan")
            if row.get("note"):
                verdict.append(f" (not queued: {row['note']})", style="yellow")
        facts = [("trigger", str(row.get("trigger") or "—")), ("verdict", verdict)]
        if row.get("summary"):
            facts.append(("summary", Text(row["summary"], style="italic")))
        if row.get("prompt_tokens") is not None:
            facts.append(("cost", cost_line(row)))
        return Group(_facts(facts), Text("reply:", style="dim"), _block(row.get("raw_response")))

    # --- a branch -----------------------------------------------------------------------------
    def _branch(self, branch: Branch, *, own: bool) -> RenderableType:
        parts: list[RenderableType] = []
        kind = {
            "root": "root episode",
            "restart": "restart from the beginning",
            "rollback": "rollback branch",
        }
        if own:
            parts.append(Text(f"Branch #{branch.id} · {kind.get(branch.kind, branch.kind)}", style="bold"))
        steps = self.index.steps.get(branch.id, [])
        facts: list[tuple[str, str | Text]] = [
            ("status", f"{branch.status}" + (f", {branch.outcome}" if branch.outcome else "")),
            (
                "review",
                Text(
                    branch.review, style={"approved": "green", "rejected": "red"}.get(branch.review, "yellow")
                ),
            ),
            ("steps", str(len(steps))),
            ("depth", str(branch.depth)),
        ]
        if branch.origin == "person":
            facts.append(("origin", f"re-branched by a person from #{branch.rebranch_of}"))
        if branch.kind == "rollback":
            facts.append(("τ", f"rollback to step {branch.rollback_step}"))
            reflection = self.index.reflections.get(branch.reflection_id or -1)
            if reflection is not None:
                where = self.index.nodes.get(reflection["node_id"])
                at = (
                    f"step {where.step} of branch #{where.branch_id}"
                    if where
                    else f"node {reflection['node_id']}"
                )
                facts.append(("reflected at", f"{at} ({reflection['trigger']})"))
        parts.append(_facts(facts))
        if branch.kind == "rollback":
            parts += [_heading("Summary as generated"), _block(branch.summary, "italic")]
            edits = self.store.summary_edits(branch.id)
            parts.append(_heading("Summary as edited"))
            if not edits:
                parts.append(Text("not edited", style="dim"))
            for edit in edits:
                parts.append(
                    Text.assemble(
                        (f"{edit['created_at'][:19].replace('T', ' ')}  ", "dim"), (edit["text"], "italic")
                    )
                )
        if own and steps:
            totals = [self.index.nodes[i] for i in steps]
            prompt = sum(n.prompt_tokens for n in totals)
            cached = sum(n.cached_tokens for n in totals)
            generated = sum(n.generated_tokens for n in totals)
            seconds = sum(n.seconds for n in totals)
            cost = {
                "prompt_tokens": prompt,
                "cached_tokens": cached,
                "generated_tokens": generated,
                "seconds": seconds,
            }
            parts += [_heading("Cost of its steps"), Text(cost_line(cost))]
        if own and branch.kind == "rollback" and branch.reflection_id in self.index.reflections:
            parts += [
                _heading("The reflection that created it"),
                self._reflection(self.index.reflections[branch.reflection_id]),
            ]
        return Group(*parts)


def _plain(renderable: RenderableType) -> str:
    import io

    from rich.console import Console

    console = Console(width=100, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()
