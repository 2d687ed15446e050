"""``leafe eval``: Pass@k of the model (optionally with an adapter) from plain rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.errors import LeafeError, SettingError
from leafe_tui import paths
from leafe_tui.cli_common import (
    BackendOption,
    BaseUrlOption,
    DbOption,
    JsonOption,
    SuiteOption,
    TasksFileOption,
    Verbs,
    WorkersOption,
    console,
    err,
    fail,
    open_store,
    print_json,
)

verbs = Verbs()
register = verbs.register


def parse_ks(text: str, samples: int | None = None) -> list[int]:
    """The k of pass@k; each must be at most the number of samples (pass@k needs k ≤ n)."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SettingError(f"--k takes comma-separated whole numbers like 1,4, not {text!r}") from None
    if not ks or ks[0] < 1:
        raise SettingError("--k values must be 1 or more")
    if samples is not None and ks[-1] > samples:
        raise SettingError(f"--k {ks[-1]} is more than -n {samples} rollouts: pass@k needs k ≤ n")
    return ks


def check_settings(samples: int, temperature: float, max_tokens: int, max_steps: int | None) -> None:
    """The flag values that would make a rollout meaningless, refused before the model loads."""
    if samples < 1:
        raise SettingError("-n must be at least 1")
    if temperature < 0:
        raise SettingError(f"--temperature must be 0 or more, not {temperature}")
    if max_tokens < 1:
        raise SettingError(f"--max-tokens must be at least 1, not {max_tokens}")
    if max_steps is not None and max_steps < 1:
        raise SettingError(f"--max-steps must be at least 1, not {max_steps}")


@verbs("eval")
def evaluate(
    tasks: Annotated[list[str] | None, typer.Argument(help="Task ids to evaluate.")] = None,
    model: Annotated[str, typer.Option("--model", help="Known model name or path to a .gguf file.")] = "",
    backend: BackendOption = "llama.cpp",
    base_url: BaseUrlOption = None,
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="A trained adapter: id (`leafe adapters`) or .gguf.")
    ] = None,
    samples: Annotated[int, typer.Option("-n", "--samples", help="Rollouts per task.")] = 4,
    k: Annotated[
        str | None,
        typer.Option("--k", help="Comma-separated k of pass@k, each at most -n [default: 1,4 up to -n]."),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Reply length limit per step [default: as the adapter was trained, else 512].",
        ),
    ] = None,
    grammar: Annotated[
        bool | None,
        typer.Option(
            "--grammar/--no-grammar",
            help="Constrain replies with the action grammar [default: as the adapter was trained, else on].",
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Steps per episode [default: the environment's limit].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="llama.cpp context length.")] = 8192,
    tasks_file: TasksFileOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    resume: Annotated[
        int | None, typer.Option("--resume", help="Continue the interrupted evaluation EVAL (`leafe evals`).")
    ] = None,
    suite: SuiteOption = None,
    workers: WorkersOption = 1,
) -> None:
    """Pass@k from plain rollouts (no reflection, no rollback), as the paper measures a policy.

    Every evaluation is stored with one row per sample (`leafe evals`), so it resumes after a kill and
    can be compared with another (`leafe compare`). Run it with and without --adapter to see what
    training changed. Example: leafe eval code/suite/digit-collapse -n 8 --k 1,4,8 --adapter 1
    """
    from engine.evaluation import create_evaluation, run_evaluation, summarise
    from engine.registry import open_backend, shared_envs
    from engine.rollout import RolloutConfig
    from engine.runtime import check_workers, env_spec_for, model_spec_for, trained_setting, with_workers
    from engine.specs import EnvSpec, ModelSpec
    from engine.store import Store
    from engine.suites import suite_tasks

    database = db or paths.default_db()
    try:
        if resume is not None:
            store = Store(database, create=False)
            record = store.evaluation(resume)
            if record["status"] == "finished":
                raise SettingError(f"evaluation {resume} already finished; nothing to resume")
            spec = ModelSpec.from_json(record["model_spec"]) or ModelSpec()
            stored = dict(record["config"])
            env_specs = {t: EnvSpec.from_json(j) for t, j in stored.pop("env_specs", {}).items()}
            config = RolloutConfig(**stored)
            tasks, samples, ks = record["tasks"], record["n"], record["ks"]
            eval_id = resume
            check_workers(spec, workers)
        else:
            tasks = [*(tasks or []), *(suite_tasks(suite) if suite else [])]
            if not tasks:
                raise SettingError(
                    "give at least one task id (see `leafe tasks list`), a suite or --resume EVAL"
                )
            spec = model_spec_for(
                model, adapter=adapter, db=database, n_ctx=n_ctx, backend=backend, base_url=base_url
            )
            # an adapter is evaluated in the setting it was trained for, unless a flag says otherwise
            trained = trained_setting(database, spec.adapter_id) if spec.adapter_id is not None else {}
            defaults = RolloutConfig()
            config = RolloutConfig(
                temperature=temperature,
                max_tokens=trained.get("max_tokens", defaults.max_tokens)
                if max_tokens is None
                else max_tokens,
                grammar=grammar if grammar is not None else trained.get("grammar", defaults.grammar),
                max_thought_chars=trained.get("max_thought_chars", defaults.max_thought_chars),
                seed=seed,
                max_steps=max_steps,
            )
            check_settings(samples, temperature, config.max_tokens, max_steps)
            check_workers(spec, workers)
            ks = parse_ks(k, samples) if k is not None else sorted({1, min(4, samples)})
            env_specs = {task: env_spec_for(task, tasks_file) for task in tasks}
            store = Store(database)
            store.check_writable()
            eval_id = create_evaluation(store, spec, list(tasks), samples, ks, config, env_specs)
        envs = shared_envs(env_specs)
        with err.status(f"loading {spec.model}{' with its adapter' if spec.adapter else ''}…"):
            loaded = open_backend(with_workers(spec, workers))
        if note := loaded.sharing_note():
            err.print(f"[yellow]note:[/] {note}", highlight=False)
    except (LeafeError, OSError) as exc:
        raise fail(exc.one_line() if isinstance(exc, LeafeError) else str(exc)) from None
    try:
        with err.status(f"evaluation {eval_id}: starting") as status:

            def progress(sample, done: int, total: int) -> None:
                mark = "✓" if sample.success else "✗"
                status.update(f"evaluation {eval_id}: {done}/{total} samples (last {sample.task_id} {mark})")

            run_evaluation(store, eval_id, loaded, envs, config, progress, workers=workers)
    except KeyboardInterrupt:
        raise fail(
            f"interrupted: resume with `leafe eval --resume {eval_id} --db {store.path}`", 130
        ) from None
    except LeafeError as exc:
        raise fail(f"{exc.one_line()} (resume with `leafe eval --resume {eval_id}`)", 1) from None
    finally:
        loaded.close()
        for env in {id(e): e for e in envs.values()}.values():
            env.close()
    summary = summarise(store, eval_id)
    rows = [_row(t, ks) for t in summary.tasks]
    if as_json:
        print_json({"eval_id": eval_id, "model": spec.model, "adapter": spec.adapter, "tasks": rows})
        return
    console.print(_table(rows, ks, spec.model, spec.adapter, eval_id))
    console.print(
        f"[dim]evaluation {eval_id} in {store.path}; `leafe compare {eval_id} OTHER` compares it[/]"
    )


def _row(task, ks: list[int]) -> dict:
    return {
        "task_id": task.task_id,
        "n": task.n,
        "successes": task.successes,
        "pass_at": {k: task.pass_at(k) for k in ks if k <= task.n},
        "generated_tokens": task.generated_tokens,
        "seconds": task.seconds,
    }


def _table(rows: list[dict], ks: list[int], model: str, adapter: str | None, eval_id: int | None = None):
    from rich.table import Table

    title = f"pass@k of {model}" + (f" + adapter {Path(adapter).parent.name}" if adapter else "")
    title = f"evaluation {eval_id}: {title}" if eval_id is not None else title
    table = Table(title=title, title_justify="left")
    for column in ("task", "n", "solved", *[f"pass@{k}" for k in ks], "tok/s"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for row in rows:
        speed = row["generated_tokens"] / row["seconds"] if row["seconds"] else 0.0
        cells = [f"{100 * row['pass_at'][k]:.1f}%" if k in row["pass_at"] else "" for k in ks]
        table.add_row(row["task_id"], str(row["n"]), str(row["successes"]), *cells, f"{speed:.0f}")
    if len(rows) > 1:
        means = []
        for k in ks:
            values = [r["pass_at"][k] for r in rows if k in r["pass_at"]]
            means.append(f"{100 * sum(values) / len(values):.1f}%" if values else "")
        table.add_row("mean", "", str(sum(r["successes"] for r in rows)), *means, "", style="bold")
    return table


# --- stored evaluations and comparing them -------------------------------------------------------
evals_app = typer.Typer(help="Stored evaluations: list them, show one.", invoke_without_command=True)
verbs.group(evals_app, "evals")


@evals_app.callback()
def evals_list(ctx: typer.Context, db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the stored evaluations with their mean pass@k.

    Example: leafe evals --json
    """
    if ctx.invoked_subcommand is not None:
        return
    from engine.evaluation import summarise
    from engine.specs import ModelSpec

    store = open_store(db)
    rows = []
    for record in store.evaluations():
        summary = summarise(store, record["id"])
        spec = ModelSpec.from_json(record["model_spec"]) or ModelSpec()
        rows.append(
            {
                "id": record["id"],
                "label": record.get("label") or "",
                "status": record["status"] if summary.complete else f"{record['status']} (incomplete)",
                "model": spec.model,
                "adapter": spec.adapter,
                "tasks": len(record["tasks"]),
                "n": record["n"],
                "mean_pass_at": {k: summary.mean_pass_at(k) for k in record["ks"]},
                "created_at": record["created_at"],
            }
        )
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="evaluations", title_justify="left")
    for column in ("eval", "label", "status", "model", "adapter", "tasks", "n", "mean pass@k", "created"):
        table.add_column(column)
    for row in rows:
        means = "  ".join(f"@{k} {100 * v:.1f}%" for k, v in row["mean_pass_at"].items())
        adapter = Path(row["adapter"]).parent.name if row["adapter"] else ""
        table.add_row(
            str(row["id"]), row["label"], row["status"], row["model"], adapter, str(row["tasks"]),
            str(row["n"]), means, row["created_at"][:19],
        )  # fmt: skip
    console.print(table)


@evals_app.command("show")
def evals_show(
    eval_id: Annotated[int, typer.Argument(help="Evaluation id from `leafe evals`.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One evaluation: per-task successes and pass@k, and the mean pass@k for k = 1 … n.

    Example: leafe evals show 2
    """
    from engine.evaluation import summarise

    store = open_store(db)
    try:
        record = store.evaluation(eval_id)
    except LeafeError as exc:
        raise fail(exc.one_line()) from None
    summary = summarise(store, eval_id)
    curve = {k: summary.mean_pass_at(k) for k in range(1, record["n"] + 1)}
    rows = [_row(t, record["ks"]) for t in summary.tasks]
    if as_json:
        print_json({"evaluation": record, "tasks": rows, "curve": curve, "complete": summary.complete})
        return
    from engine.specs import ModelSpec

    spec = ModelSpec.from_json(record["model_spec"]) or ModelSpec()
    console.print(_table(rows, record["ks"], spec.model, spec.adapter, eval_id))
    console.print("mean pass@k  " + "  ".join(f"@{k} {100 * v:.1f}%" for k, v in curve.items()))
    if not summary.complete:
        console.print(f"[yellow]incomplete[/]: `leafe eval --resume {eval_id}` adds the missing samples")


@verbs("compare")
def compare_evals(
    a: Annotated[int, typer.Argument(help="The evaluation to compare against (e.g. the base model).")],
    b: Annotated[int, typer.Argument(help="The evaluation compared (e.g. with the adapter).")],
    level: Annotated[float, typer.Option(help="Confidence level of the interval.")] = 0.95,
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 2000,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Is B better than A, at which k, and is it real? Difference of mean pass@k (B − A) with a paired
    bootstrap confidence interval over the tasks both evaluated.

    Example: leafe compare 1 2
    """
    from dataclasses import asdict as as_dict

    from engine.evaluation import compare, summarise

    store = open_store(db)
    try:
        result = compare(summarise(store, a), summarise(store, b), level=level, resamples=resamples)
    except LeafeError as exc:
        raise fail(exc.one_line()) from None
    if as_json:
        data = as_dict(result)
        for row, k_result in zip(data["by_k"], result.by_k, strict=True):
            row["real"] = k_result.real
        print_json(data)
        return
    for note in result.notes:
        console.print(f"[dim]{note}[/]")
    for row in result.by_k:
        console.print(row.sentence(f"#{a}", f"#{b}", level), highlight=False)
    if result.only_b:
        console.print(f"solved only by #{b}: {', '.join(result.only_b)}", highlight=False)
    if result.only_a:
        console.print(f"solved only by #{a}: {', '.join(result.only_a)}", highlight=False)


@evals_app.command("plot")
def evals_plot(
    eval_ids: Annotated[list[int], typer.Argument(help="Evaluation ids, drawn on one plot.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Also write the plot as an SVG file (for a report).")
    ] = None,
    db: DbOption = None,
) -> None:
    """The mean pass@k curve (k = 1 … n) of one or more evaluations, in the terminal and as SVG.

    Example: leafe evals plot 1 2 --out passk.svg
    """
    from engine.evaluation import summarise
    from engine.specs import ModelSpec
    from leafe_tui.pass_plot import curve_table, write_svg

    store = open_store(db)
    curves = []
    try:
        for eval_id in eval_ids:
            record = store.evaluation(eval_id)
            summary = summarise(store, eval_id)
            spec = ModelSpec.from_json(record["model_spec"]) or ModelSpec()
            label = f"#{eval_id} " + (
                record.get("label") or Path(spec.model).name + (" + adapter" if spec.adapter else "")
            )
            curves.append((label, {k: summary.mean_pass_at(k) for k in range(1, record["n"] + 1)}))
    except LeafeError as exc:
        raise fail(exc.one_line()) from None
    console.print(curve_table(curves))
    if out is not None:
        console.print(f"written to {write_svg(curves, out)}")
