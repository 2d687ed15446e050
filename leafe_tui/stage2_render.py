"""Rich renderings of Stage-2 things: masked examples, datasets, jobs with their loss curve, adapters."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.prompts import GUIDANCE_HEADER
from leafe_tui.styles import num, pct, status_style
from trainer.masking import TokenizedExample

TRAINED_STYLE = "bold black on green"
CONTEXT_STYLE = "dim"
BLOCKS = "▁▂▃▄▅▆▇█"


def _runs(tokens: TokenizedExample) -> list[tuple[bool, list[int]]]:
    return [(flag, tokens.input_ids[start:end]) for flag, start, end in tokens.runs()]


def masked_text(tokens: TokenizedExample, decode: Any, *, context_chars: int = 0) -> Text:
    """The example's text, trained tokens highlighted; long context runs cut to their last characters."""
    text = Text()
    for flag, ids in _runs(tokens):
        chunk = decode(ids)
        if not flag and context_chars and len(chunk) > context_chars:
            text.append(f"[… {len(chunk) - context_chars} characters of context …]", style="italic dim")
            chunk = chunk[-context_chars:]
        text.append(chunk, style=TRAINED_STYLE if flag else CONTEXT_STYLE)
    return text


def example_checks(record: dict[str, Any], tokens: TokenizedExample, template: Any) -> list[str]:
    """What a person wants confirmed about a masked example; each line starts with ✓ or ✗."""
    runs = _runs(tokens)
    context = "".join(template.decode(ids) for flag, ids in runs if not flag)
    spans = [ids for flag, ids in runs if flag]
    turns = [m for m in record["messages"] if m["role"] == "assistant" and m.get("training")]
    ends = {template.piece(ids[-1]) for ids in spans}
    return [
        _check(GUIDANCE_HEADER not in context, "no experience summary in the context"),
        _check(len(spans) == len(turns), f"{len(spans)} trained spans for {len(turns)} trained replies"),
        _check(len(ends) == 1, f"every span ends with the end-of-turn token {sorted(ends)}"),
    ]


def _check(ok: bool, text: str) -> str:
    return f"{'✓' if ok else '✗'} {text}"


def example_panel(
    number: int, record: dict[str, Any], tokens: TokenizedExample, template: Any, context_chars: int
) -> Group:
    lineage = record.get("lineage") or {}
    where = ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in lineage.items() if k in ("run_id", "branch_id")
    )
    head = Text(f"example {number}  ", style="bold")
    head.append(f"{record.get('kind', '?')}  {record.get('task_id', '')}  {where}  ")
    head.append(f"{len(tokens.input_ids)} tokens, {tokens.trained_count} trained", style="cyan")
    checks = Text("\n".join(example_checks(record, tokens, template)), style="green")
    body = masked_text(tokens, template.decode, context_chars=context_chars)
    return Group(head, checks, body, Text(""))


def datasets_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="datasets", title_justify="left")
    for column in ("id", "examples", "cf", "reh", "tasks", "selection", "path", "created"):
        table.add_column(column)
    for row in rows:
        counts, settings = row["counts"], row["settings"]
        table.add_row(
            str(row["id"]),
            str(counts.get("examples", 0)),
            str(counts.get("counterfactual", 0)),
            str(counts.get("rehearsal", 0)),
            str(counts.get("tasks", 0)),
            settings.get("selection", ""),
            row["path"],
            (row.get("created_at") or "")[:19],
        )
    return table


def sparkline(values: list[float], width: int = 40) -> str:
    """A one-line curve of the last ``width`` values (lowest ▁, highest █)."""
    values = values[-width:]
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low or 1.0
    return "".join(BLOCKS[min(len(BLOCKS) - 1, int((v - low) / span * len(BLOCKS)))] for v in values)


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def jobs_table(rows: list[dict[str, Any]]) -> Group:
    """One line per job; errors and notes follow the table in full (they are long)."""
    table = Table(title="training jobs", title_justify="left")
    for column in ("job", "status", "base", "method", "step", "loss", "eval", "tok/s", "ETA"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("job", "step") else "left")
    notes = []
    for row in rows:
        status = row.get("effective_status") or row["status"]
        style = status_style(status)
        phase = row.get("phase")
        shown = phase if status == "running" and phase and phase != "training" else status
        table.add_row(
            str(row["id"]),
            Text(shown, style=style),
            row["base"],
            row["method"],
            f"{row.get('step') or 0}/{row.get('total_steps') or '?'}",
            num(row.get("train_loss")),
            num(row.get("eval_loss")),
            num(row.get("tokens_per_s"), 0),
            fmt_seconds(row.get("eta_s")) if status == "running" else "",
        )
        if row.get("error"):
            notes.append(Text(f"job {row['id']}: {row['error']}", style="red"))
    return Group(table, *notes)


def adapters_table(rows: list[dict[str, Any]]) -> Group:
    """One line per adapter, then its GGUF file. parity: llama.cpp vs transformers top-1 agreement with
    the adapter; floor: the same without it; changes: how often the adapter changes the top-1 token."""
    table = Table(title="adapters", title_justify="left")
    for column in ("adapter", "job", "data", "base", "rank", "parity", "floor", "changes"):
        table.add_column(column, no_wrap=True)
    files = []
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["job_id"]),
            str(row.get("dataset_id") or ""),
            row["base"],
            str(row["rank"]),
            pct(row.get("parity")),
            pct(row.get("parity_base")),
            pct(row.get("parity_effect")),
        )
        files.append(Text(f"adapter {row['id']}: {row.get('gguf_path') or '(not exported)'}", style="dim"))
    return Group(table, *files)
