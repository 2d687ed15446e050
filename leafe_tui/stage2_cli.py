"""Stage-2 verbs of the ``leafe`` command line: review, dataset, train, jobs, adapters.

Registered on the main app by ``leafe_tui.cli``. torch is imported only by the verbs that train.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.errors import SettingError
from engine.store import Store, StoreError
from leafe_tui.cli_common import DbOption, JsonOption, Verbs, console, err, fail, open_store, print_json

dataset_app = typer.Typer(help="Stage-2 datasets built from approved branches.", no_args_is_help=True)
jobs_app = typer.Typer(help="Training jobs: list them, follow one, cancel one.", invoke_without_command=True)
verbs = Verbs({"dataset": dataset_app, "jobs": jobs_app})
register = verbs.register

STAGE2_ERRORS: tuple[type[BaseException], ...] = (StoreError, ValueError, OSError)


# --- review ---------------------------------------------------------------------------------
@verbs()
def review(
    branches: Annotated[list[int], typer.Argument(help="Branch ids (the #N in `leafe tree`).")],
    state: Annotated[str, typer.Option("--set", help="approved, rejected or pending.")] = "approved",
    db: DbOption = None,
) -> None:
    """Approve (or reject) branches for training; only approved branches enter a dataset by default.

    Example: leafe review 3 5 --set approved
    """
    from engine.errors import NotFoundError

    store = open_store(db)
    for branch_id in branches:
        try:
            store.branch(branch_id)
        except NotFoundError as exc:
            raise fail(f"{exc}: `leafe tree RUN` shows branch ids") from None
    try:
        for branch_id in branches:
            store.set_review(branch_id, state)
    except StoreError as exc:
        raise fail(str(exc)) from None
    console.print(f"{len(branches)} branch(es) {state}: {', '.join(f'#{b}' for b in branches)}")


# --- dataset --------------------------------------------------------------------------------
@dataset_app.command("build")
def dataset_build(
    out: Annotated[Path, typer.Option("--out", help="The JSONL file to write.")],
    runs: Annotated[
        str | None, typer.Option("--runs", help="Comma-separated run ids [default: all].")
    ] = None,
    all_successful: Annotated[
        bool,
        typer.Option(
            "--all-successful/--approved-only",
            help="Every successful branch a person did not reject, or only approved ones.",
        ),
    ] = False,
    rehearsal_fraction: Annotated[
        float, typer.Option("--rehearsal-fraction", help="Share of each task's successful trajectories.")
    ] = 0.2,
    cf_per_task: Annotated[int, typer.Option("--cf-per-task", help="Counterfactual examples per task.")] = 3,
    cf_suffix: Annotated[
        bool, typer.Option("--cf-suffix", help="Train the whole corrected suffix, not only the step-τ reply.")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the per-task sampling.")] = 0,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build the rehearsal + counterfactual dataset (chat JSONL, summaries never in the context).

    Example: leafe dataset build --out data/approved.jsonl --cf-per-task 3
    """
    from trainer.dataset import DatasetSettings, build_dataset

    store = open_store(db)
    try:
        run_ids = tuple(int(r) for r in runs.split(",")) if runs else ()
        settings = DatasetSettings(
            selection="successful" if all_successful else "approved",
            runs=run_ids,
            rehearsal_fraction=rehearsal_fraction,
            cf_per_task=cf_per_task,
            cf_suffix=cf_suffix,
            seed=seed,
        )
        dataset_id, counts = build_dataset(store, settings, out)
    except STAGE2_ERRORS as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json({"id": dataset_id, "path": str(out.resolve()), "counts": counts})
        return
    console.print(
        f"dataset {dataset_id}: {counts['examples']} examples ({counts['counterfactual']} counterfactual, "
        f"{counts['rehearsal']} rehearsal) from {counts['tasks']} task(s) → {out}",
        highlight=False,
    )
    if counts["skipped"]:
        skipped = ", ".join(f"{v} {k}" for k, v in counts["skipped"].items())
        console.print(f"[dim]left out: {skipped}[/]", highlight=False)
    console.print(
        f"next: leafe dataset show {dataset_id}   ·   leafe train --dataset {dataset_id}", highlight=False
    )


@dataset_app.command("list")
def dataset_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the datasets recorded in a database.

    Example: leafe dataset list
    """
    from leafe_tui.stage2_render import datasets_table

    rows = open_store(db).datasets()
    if as_json:
        print_json(rows)
    elif not rows:
        console.print("no datasets yet: `leafe dataset build --out FILE.jsonl`")
    else:
        console.print(datasets_table(rows))


def _dataset_path(dataset: str, db: Path | None) -> tuple[Path, dict[str, Any] | None]:
    if dataset.isdigit():
        store = open_store(db)
        try:
            row = store.dataset(int(dataset))
        except StoreError as exc:
            raise fail(str(exc)) from None
        return Path(row["path"]), row
    return Path(dataset).expanduser(), None


def _model_for(records: list[dict[str, Any]], model: str | None) -> str:
    from engine.models import DEFAULT_MODEL
    from trainer.dataset import dataset_model

    return model or dataset_model(records, DEFAULT_MODEL)


@dataset_app.command("show")
def dataset_show(
    dataset: Annotated[str, typer.Argument(help="A dataset id or a JSONL file.")],
    model: Annotated[
        str | None, typer.Option("--model", help="Tokenise with this model [default: the runs' model].")
    ] = None,
    example: Annotated[int | None, typer.Option("--example", help="Only this example (from 1).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Show at most this many examples.")] = 5,
    context: Annotated[
        int, typer.Option("--context", help="Characters of each context run to show (0: all).")
    ] = 600,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show examples as the model sees them: its chat template and tokens, trained tokens highlighted.

    Example: leafe dataset show 1 --example 2 --context 0
    """
    from engine.chat_template import GgufChatTemplate
    from engine.models import ModelError, resolve_model
    from leafe_tui.stage2_render import example_panel
    from trainer.dataset import read_dataset
    from trainer.masking import tokenize_chat

    path, _ = _dataset_path(dataset, db)
    try:
        records = read_dataset(path)
        name = _model_for(records, model)
        template = GgufChatTemplate.from_gguf(resolve_model(name))
        chosen = list(enumerate(records, start=1))
        if example is not None:
            if not 1 <= example <= len(records):
                raise SettingError(f"--example must be between 1 and {len(records)}")
            chosen = [chosen[example - 1]]
        else:
            chosen = chosen[:limit]
        masked = [(number, record, tokenize_chat(record["messages"], template)) for number, record in chosen]
    except (ModelError, *STAGE2_ERRORS) as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(
            [
                {
                    "example": number,
                    "kind": record.get("kind"),
                    "input_ids": tokens.input_ids,
                    "trained": tokens.trained,
                    "trained_text": [template.decode(tokens.input_ids[a:b]) for a, b in tokens.spans()],
                }
                for number, record, tokens in masked
            ]
        )
        return
    console.print(
        f"{path}: {len(records)} examples, tokenised with {template.name} "
        "([bold black on green]trained[/], [dim]context[/])",
        highlight=False,
    )
    for number, record, tokens in masked:
        console.print(example_panel(number, record, tokens, template, context))


# --- train ----------------------------------------------------------------------------------
@verbs()
def train(
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset id or JSONL file.")] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--base", help="Model name, GGUF file or HF checkpoint folder [default: the runs' model]."
        ),
    ] = None,
    qlora: Annotated[
        bool | None,
        typer.Option("--qlora/--lora", help="4-bit QLoRA (CUDA) or LoRA [default: QLoRA where a GPU is]."),
    ] = None,
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[float, typer.Option(help="LoRA alpha (scale alpha/rank).")] = 32.0,
    epochs: Annotated[int, typer.Option(help="Passes over the training examples.")] = 2,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 1e-4,
    beta: Annotated[float, typer.Option(help="β: weight of the rehearsal loss (L = L_cf + β·L_reh).")] = 1.0,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Examples per optimiser step.")] = 4,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop after this many optimiser steps.")
    ] = None,
    max_seq_len: Annotated[int, typer.Option("--max-seq-len", help="Longer examples are left out.")] = 2048,
    eval_fraction: Annotated[
        float, typer.Option("--eval-fraction", help="Held-out share for eval loss.")
    ] = 0.1,
    seed: Annotated[int, typer.Option(help="Seed of the split, order and LoRA init.")] = 0,
    background: Annotated[
        bool, typer.Option("--background", help="Run in a worker process; follow it with `leafe jobs`.")
    ] = False,
    resume: Annotated[
        int | None, typer.Option("--resume", help="Continue job JOB from its last checkpoint.")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Distil a dataset into a LoRA adapter, export it to GGUF for llama.cpp and check parity.

    Example: leafe train --dataset 1 --epochs 2 --background
    """
    from engine.models import ModelError
    from trainer.jobs import create_job, prepare_resume, start_background
    from trainer.train import TrainConfig, TrainError

    store = open_store(db, create=dataset is not None and not (dataset or "").isdigit())
    try:
        if resume is not None:
            job_id = prepare_resume(store, resume)["id"]
        else:
            if dataset is None:
                raise SettingError("give --dataset ID|FILE (see `leafe dataset list`) or --resume JOB")
            config = TrainConfig(
                rank=rank,
                alpha=alpha,
                epochs=epochs,
                lr=lr,
                beta=beta,
                grad_accum=grad_accum,
                max_steps=max_steps,
                max_seq_len=max_seq_len,
                eval_fraction=eval_fraction,
                seed=seed,
            )
            method = "auto" if qlora is None else ("qlora" if qlora else "lora")
            job_id = create_job(store, dataset, base, method, config)
    except (TrainError, ModelError, *STAGE2_ERRORS) as exc:
        raise fail(str(exc)) from None
    if background:
        pid = start_background(store, job_id)
        if as_json:
            print_json(store.job(job_id))
        else:
            console.print(
                f"job {job_id} started in the background (pid {pid}); "
                f"follow it with `leafe jobs show {job_id}`, stop it with `leafe jobs cancel {job_id}`",
                highlight=False,
            )
        return
    row = _train_foreground(store, job_id, quiet=as_json)
    if as_json:
        print_json(row)
    if row["status"] == "failed":
        raise typer.Exit(1)
    if row["status"] == "cancelled":
        raise typer.Exit(130)


def _train_foreground(store: Store, job_id: int, *, quiet: bool) -> dict[str, Any]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from trainer.train import run_job

    columns = (
        TextColumn("job {task.fields[job]}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, disable=quiet, transient=False) as bar:
        task = bar.add_task("train", total=None, job=job_id, status="preparing…")

        def show(row: dict[str, Any]) -> None:
            loss = f"loss {row['train_loss']:.3f}" if row.get("train_loss") is not None else ""
            ev = f" eval {row['eval_loss']:.3f}" if row.get("eval_loss") is not None else ""
            speed = f" {row['tokens_per_s']:.0f} tok/s" if row.get("tokens_per_s") else ""
            bar.update(task, completed=row["step"], total=row["total_steps"], status=f"{loss}{ev}{speed}")

        try:
            row = run_job(store, job_id, progress=show)
        except KeyboardInterrupt:
            row = store.job(job_id)
            err.print(
                f"[yellow]interrupted[/]: resume with `leafe train --resume {job_id} --db {store.path}`"
            )
            return row
        except Exception:
            row = store.job(job_id)
    if not quiet:
        _report_end(store, row)
    return row


def _report_end(store: Store, row: dict[str, Any]) -> None:
    if row["status"] == "failed":
        err.print(f"[bold red]error:[/] job {row['id']} failed: {row['error']}", highlight=False)
        err.print(f"resume with `leafe train --resume {row['id']} --db {store.path}`", highlight=False)
        return
    if row["status"] == "cancelled":
        console.print(f"job {row['id']} cancelled; `leafe train --resume {row['id']}` continues it")
        return
    adapter = next((a for a in store.adapters() if a["job_id"] == row["id"]), None)
    losses = store.metrics(row["id"], "train")
    first = losses[0]["loss"] if losses else None
    console.print(
        f"job {row['id']} done: train loss {first:.3f} → {row['train_loss']:.3f}"
        + (f", eval loss {row['eval_loss']:.3f}" if row.get("eval_loss") is not None else ""),
        highlight=False,
    )
    if adapter:
        parity = (
            f"; llama.cpp agrees with transformers on {100 * adapter['parity']:.1f}% of next tokens "
            f"(base model: {100 * adapter['parity_base']:.1f}%; the adapter changes "
            f"{100 * (adapter.get('parity_effect') or 0):.1f}% of them)"
            if adapter.get("parity") is not None
            else ""
        )
        console.print(f"adapter {adapter['id']}: {adapter['gguf_path']}{parity}", highlight=False)
        console.print(
            f"next: leafe explore TASK --model {adapter['base']} --adapter {adapter['id']}", highlight=False
        )


# --- jobs -----------------------------------------------------------------------------------
@jobs_app.callback()
def jobs(ctx: typer.Context, db: DbOption = None, as_json: JsonOption = False) -> None:
    """List training jobs: state, step, loss, eval loss, tokens/s, ETA, error.

    Example: leafe jobs
    """
    if ctx.invoked_subcommand is not None:
        ctx.obj = {"db": db}
        return
    from leafe_tui.stage2_render import jobs_table

    rows = open_store(db).jobs()
    if as_json:
        print_json(rows)
    elif not rows:
        console.print("no training jobs yet: `leafe train --dataset ID --background`")
    else:
        console.print(jobs_table(rows))


def _jobs_db(ctx: typer.Context, db: Path | None) -> Path | None:
    return db or (ctx.obj or {}).get("db")


@jobs_app.command("cancel")
def jobs_cancel(
    ctx: typer.Context,
    job: Annotated[int, typer.Argument(help="Job id from `leafe jobs`.")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until the worker has stopped.")] = False,
    db: DbOption = None,
) -> None:
    """Stop a job cleanly: it saves a checkpoint and ends as cancelled (resumable).

    Example: leafe jobs cancel 2 --wait
    """
    from trainer.jobs import cancel

    store = open_store(_jobs_db(ctx, db))
    try:
        row = cancel(store, job)
    except StoreError as exc:
        raise fail(str(exc)) from None
    while wait and row["effective_status"] == "running":
        time.sleep(0.5)
        row = store.job(job)
    status = row["effective_status"]
    if status == "running":
        console.print(f"job {job}: cancel requested; the worker stops after its current step")
    else:
        console.print(f"job {job}: {status}")


@jobs_app.command("show")
def jobs_show(
    ctx: typer.Context,
    job: Annotated[int, typer.Argument(help="Job id from `leafe jobs`.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep updating until the job ends.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One job: settings, progress, the loss curve, its adapter.

    Example: leafe jobs show 2 --follow
    """
    store = open_store(_jobs_db(ctx, db))
    try:
        row = store.job(job)
    except StoreError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json({"job": row, "metrics": store.metrics(job)})
        return
    if not follow:
        console.print(_job_view(store, row))
        return
    from rich.live import Live

    with Live(_job_view(store, row), console=console, refresh_per_second=2) as live:
        while row["effective_status"] in ("queued", "running"):
            time.sleep(1.0)
            row = store.job(job)
            live.update(_job_view(store, row))


def _job_view(store: Store, row: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.text import Text

    from leafe_tui.stage2_render import adapters_table, jobs_table, sparkline

    train = [m["loss"] for m in store.metrics(row["id"], "train")]
    evals = [m["loss"] for m in store.metrics(row["id"], "eval")]
    parts: list[Any] = [jobs_table([row])]
    if train:
        parts.append(Text(f"train loss {train[0]:.3f} → {train[-1]:.3f}  {sparkline(train, 60)}"))
    if evals:
        parts.append(Text(f"eval loss  {evals[0]:.3f} → {evals[-1]:.3f}  {sparkline(evals, 60)}"))
    settings = ", ".join(f"{k} {v}" for k, v in sorted(row["config"].items()) if v is not None)
    parts.append(Text(f"dataset {row['dataset_id'] or row['dataset_path']}; {settings}", style="dim"))
    if row.get("note"):
        parts.append(Text(row["note"], style="yellow"))
    adapters = [a for a in store.adapters() if a["job_id"] == row["id"]]
    if adapters:
        parts.append(adapters_table(adapters))
    if row.get("out_dir"):
        parts.append(Text(f"files: {row['out_dir']}", style="dim"))
    return Group(*parts)


# --- adapters -------------------------------------------------------------------------------
@verbs()
def adapters(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List trained adapters with their lineage and llama.cpp parity.

    Example: leafe adapters
    """
    from leafe_tui.stage2_render import adapters_table

    rows = open_store(db).adapters()
    if as_json:
        print_json(rows)
    elif not rows:
        console.print("no adapters yet: `leafe train --dataset ID`")
    else:
        console.print(adapters_table(rows))
