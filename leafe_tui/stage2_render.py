"""Rich renderings of Stage-2 things: masked examples, datasets, jobs with their loss curve, adapters."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.prompts import GUIDANCE_HEADER

TRAINED_STYLE = "bold black on green"
CONTEXT_STYLE = "dim"
BLOCKS = "▁▂▃▄▅▆▇█"


def masked_text(input_ids: list[int], trained: list[bool], piece: Any, *, context_chars: int = 0) -> Text:
    """The example's text, trained tokens highlighted; long context runs cut to their last characters."""
    text = Text()
    run: list[str] = []
    flag = None

    def flush() -> None:
        chunk = "".join(run)
        if not chunk:
            return
        if flag is False and context_chars and len(chunk) > context_chars:
            hidden = len(chunk) - context_chars
            text.append(f"[… {hidden} characters of context …]", style="italic dim")
            chunk = chunk[-context_chars:]
        text.append(chunk, style=TRAINED_STYLE if flag else CONTEXT_STYLE)

    for token, is_trained in zip(input_ids, trained, strict=True):
        if is_trained is not flag:
            flush()
            run, flag = [], is_trained
        run.append(piece(token))
    flush()
    return text


def example_checks(
    record: dict[str, Any], input_ids: list[int], trained: list[bool], piece: Any
) -> list[str]:
    """What a person wants confirmed about a masked example; each line starts with ✓ or ✗."""
    context = "".join(piece(t) for t, f in zip(input_ids, trained, strict=True) if not f)
    turns = [m for m in record["messages"] if m["role"] == "assistant" and m.get("training")]
    spans = _spans(trained)
    ends = [piece(input_ids[end - 1]) for _, end in spans]
    return [
        _check(GUIDANCE_HEADER not in context, "no experience summary in the context"),
        _check(len(spans) == len(turns), f"{len(spans)} trained spans for {len(turns)} trained replies"),
        _check(bool(ends) and len(set(ends)) == 1, f"every span ends with the end-of-turn token {ends[:1]}"),
    ]


def _check(ok: bool, text: str) -> str:
    return f"{'✓' if ok else '✗'} {text}"


def _spans(flags: list[bool]) -> list[tuple[int, int]]:
    out, start = [], None
    for index, flag in enumerate([*flags, False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            out.append((start, index))
            start = None
    return out


def example_panel(
    number: int,
    record: dict[str, Any],
    input_ids: list[int],
    trained: list[bool],
    piece: Any,
    context_chars: int,
) -> Group:
    lineage = record.get("lineage") or {}
    where = ", ".join(
        f"{k.replace('_', ' ')} {v}" for k, v in lineage.items() if k in ("run_id", "branch_id")
    )
    head = Text(f"example {number}  ", style="bold")
    head.append(f"{record.get('kind', '?')}  {record.get('task_id', '')}  {where}  ")
    head.append(f"{len(input_ids)} tokens, {sum(trained)} trained", style="cyan")
    checks = Text("\n".join(example_checks(record, input_ids, trained, piece)), style="green")
    return Group(head, checks, masked_text(input_ids, trained, piece, context_chars=context_chars), Text(""))


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


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def jobs_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="training jobs", title_justify="left")
    for column in (
        "job",
        "status",
        "phase",
        "base",
        "method",
        "step",
        "loss",
        "eval",
        "tok/s",
        "ETA",
        "error",
    ):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = row.get("effective_status") or row["status"]
        style = {"done": "green", "failed": "red", "cancelled": "yellow", "interrupted": "yellow"}.get(
            status, ""
        )
        table.add_row(
            str(row["id"]),
            Text(status, style=style),
            row.get("phase") or "",
            row["base"],
            row["method"],
            f"{row.get('step') or 0}/{row.get('total_steps') or '?'}",
            _num(row.get("train_loss")),
            _num(row.get("eval_loss")),
            _num(row.get("tokens_per_s"), 0),
            fmt_seconds(row.get("eta_s")) if status == "running" else "",
            row.get("error") or "",
        )
    return table


def adapters_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="adapters", title_justify="left")
    for column in ("adapter", "job", "dataset", "base", "rank", "parity", "base parity", "changes", "GGUF"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            str(row["job_id"]),
            str(row.get("dataset_id") or ""),
            row["base"],
            str(row["rank"]),
            _pct(row.get("parity")),
            _pct(row.get("parity_base")),
            _pct(row.get("parity_effect")),
            row.get("gguf_path") or "",
        )
    return table


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"
