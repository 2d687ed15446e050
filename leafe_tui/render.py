"""Rich renderings of runs and rollback trees, shared by ``leafe tree`` and the live view."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from engine.run_tree import RunTree
from engine.store import Branch
from leafe_tui.display_text import short_line, step_summary
from leafe_tui.styles import status_style

OUTCOME_STYLE = {"success": ("✓", "bold green"), "failure": ("✗", "red"), None: ("…", "yellow")}


def short_action(action: str | None, width: int = 48) -> str:
    """One-line form of an action: code becomes "N lines: first line"."""
    if action is None:
        return "(unparsable reply)"
    lines = [line for line in action.splitlines() if line.strip()]
    text = f"{len(lines)} lines: {lines[0].strip()}" if len(lines) > 1 else "".join(lines).strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def node_symbol(node: dict[str, Any]) -> tuple[str, str]:
    """The outcome glyph and style of one step: ✓ success, ⚠ invalid, ✗ failed end, · otherwise."""
    if node["success"]:
        return "✓", "bold green"
    if not node["valid"]:
        return "⚠", "magenta"
    if node["done"]:
        return "✗", "red"
    return "·", "white"


def node_label(node: dict[str, Any], previous_action: str | None = None) -> Text:
    """One step: its glyph, then what it did (a program: its feedback and how it changed)."""
    symbol, style = node_symbol(node)
    label = Text(f"{node['step']:>2} ", style="dim")
    label.append(f"{symbol} ", style=style)
    action = node["action"]
    if action is not None and "\n" in action.strip():
        said, _, change = step_summary(action, node["feedback"], previous_action).rpartition("  · ")
        label.append(said, style=style if node["success"] else "")
        label.append(f"  · {change}", style="dim")
        return label
    label.append(short_action(action), style=style if node["success"] else "")
    if node["feedback"]:
        label.append(f"  {short_line(node['feedback'])}", style="dim")
    return label


def steps_strip(nodes: list[dict[str, Any]]) -> Text:
    """All steps of an episode on one line (step number and glyph), then the last feedback."""
    strip = Text()
    for node in nodes:
        symbol, style = node_symbol(node)
        strip.append(f"{node['step']}", style="dim")
        strip.append(f"{symbol} ", style=style)
    if nodes and nodes[-1]["feedback"]:
        strip.append(f" {short_line(nodes[-1]['feedback'], 60)}", style="dim")
    return strip


def branch_label(branch: dict[str, Any]) -> Text:
    symbol, style = OUTCOME_STYLE.get(branch["outcome"], ("–", "dim"))
    if branch["status"] == "queued":
        symbol, style = "⏳", "yellow"
    elif branch["status"] == "skipped":
        symbol, style = "–", "dim"
    label = Text()
    if branch["kind"] == "rollback":
        label.append(f"↺ branch #{branch['id']} ", style="bold cyan")
        label.append(f"τ={branch['rollback_step']} ", style="cyan")
    else:
        label.append(f"● episode #{branch['id']} ({branch['kind']}) ", style="bold")
    label.append(f"{symbol} {branch['outcome'] or branch['status']}", style=style)
    summary = branch.get("summary_edited") or branch.get("summary")
    if summary:
        label.append(f"  “{short_line(summary, 90)}”", style="italic")
    return label


def tree_renderable(tree: RunTree, *, compact: bool = False) -> Tree:
    """A Rich tree of one run.

    Full form: episodes, one line per step, branches nested under the step they roll back from.
    Compact form (the live view): one line of step glyphs per episode, branches nested under the
    episode they came from, so a growing run stays on one screen.
    """
    run = tree.run
    root = Tree(
        Text.assemble(
            (f"run {run['id']} ", "bold"),
            (run["task_id"], "bold blue"),
            f"  {run['model']}  ",
            (run["status"], status_style(run["status"])),
        )
    )
    children: dict[int | None, list[Branch]] = defaultdict(list)
    for branch in sorted(tree.branches.values(), key=lambda b: b.id):
        children[branch.parent_branch_id].append(branch)

    def add_branch(parent: Tree, branch: Branch) -> None:
        subtree = parent.add(branch_label(branch.__dict__))
        nodes = [n.__dict__ for n in tree.branch_nodes(branch.id)]
        if compact:
            if nodes:
                subtree.add(steps_strip(nodes))
            for child in children.get(branch.id, []):
                add_branch(subtree, child)
            return
        for node in nodes:
            parent_node = tree.nodes.get(node["parent_id"]) if node["parent_id"] is not None else None
            child = subtree.add(node_label(node, parent_node.action if parent_node else None))
            for fork in tree.forks.get(node["id"], []):
                add_branch(child, tree.branches[fork])

    if compact:
        for branch in children.get(None, []):
            add_branch(root, branch)
    elif tree.root_id is not None:
        for fork in tree.forks.get(tree.root_id, []):
            add_branch(root, tree.branches[fork])
    return root


def totals_line(totals: dict[str, Any], budget: int | None = None) -> Text:
    """Steps, episodes, successes and token figures of a run in one line."""
    seconds = totals["seconds"] or 0.0
    rate = totals["generated_tokens"] / seconds if seconds else 0.0
    text = Text()
    episodes = f"{totals['episodes']}/{budget}" if budget else str(totals["episodes"])
    text.append(f"episodes {episodes}  steps {totals['steps']}  ")
    text.append(f"successes {totals['successes']}  ", style="green" if totals["successes"] else "")
    text.append(
        f"prompt {totals['prompt_tokens']} tok (reused {totals['cached_tokens']}, "
        f"evaluated {totals['evaluated_tokens']})  generated {totals['generated_tokens']} tok  "
        f"{rate:.1f} tok/s  model time {seconds:.1f}s",
        style="dim",
    )
    return text


def runs_table(runs: list[dict[str, Any]]) -> Table:
    table = Table(title="runs", title_justify="left")
    for column in ("run", "task", "model", "status", "episodes", "steps", "branches", "successes", "created"):
        table.add_column(column, justify="right" if column in {"run", "episodes", "steps"} else "left")
    for run in runs:
        table.add_row(
            str(run["id"]),
            run["task_id"],
            run["model"],
            run["status"],
            str(run["episodes"]),
            str(run["steps"]),
            str(run["rollbacks"]),
            str(run["successes"]),
            run["created_at"][:19],
        )
    return table
