"""``leafe ablate``: the paper's ablations on the user's own tasks.

- ``ablate explore``: independent sampling, iterative refinement and the rollback tree, each spending
  the same number of environment steps per task (Stage 1, the paper's Table 3);
- ``ablate distill``: rehearsal only against rehearsal + counterfactual, same data budget and
  training settings, both evaluated on held-out tasks (Stage 2, its Table 4);
- ``ablate list`` / ``ablate show ID``: the stored ablations.
"""

from __future__ import annotations

from typing import Annotated, Any

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
    console,
    err,
    explore_default,
    explore_option,
    fail,
    fail_with,
    open_store,
    print_json,
)

verbs = Verbs()
register = verbs.register
ablate_app = typer.Typer(
    help="The paper's ablations on your own tasks (Stage 1 and Stage 2).", no_args_is_help=True
)
verbs.group(ablate_app, "ablate")

ResumeOption = Annotated[
    int | None,
    typer.Option("--resume", help="Continue the interrupted ablation ID (`leafe ablate list`)."),
]
StrategiesOption = Annotated[
    str,
    typer.Option("--strategies", help="Comma-separated strategies to compare: tree, refine, independent."),
]


@ablate_app.command("explore")
def ablate_explore(
    tasks: Annotated[
        list[str] | None, typer.Argument(help="Task ids; each gets one run per strategy.")
    ] = None,
    budget: Annotated[
        int, typer.Option("--budget", help="Environment steps per task and strategy (code: program runs).")
    ] = 12,
    strategies: StrategiesOption = "independent,refine,tree",
    model: Annotated[str, typer.Option("--model", help="Known model name or path to a .gguf file.")] = "",
    backend: BackendOption = "llama.cpp",
    base_url: BaseUrlOption = None,
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="A trained adapter: id (`leafe adapters`) or .gguf.")
    ] = None,
    suite: SuiteOption = None,
    max_depth: Annotated[int, explore_option("max_depth")] = explore_default("max_depth"),
    reflect_every: Annotated[int, explore_option("reflect_every")] = explore_default("reflect_every"),
    seed: Annotated[int, explore_option("seed")] = explore_default("seed"),
    temperature: Annotated[float, explore_option("temperature")] = explore_default("temperature"),
    reflect_temperature: Annotated[float, explore_option("reflect_temperature")] = explore_default(
        "reflect_temperature"
    ),
    max_tokens: Annotated[int, explore_option("max_tokens")] = explore_default("max_tokens"),
    grammar: Annotated[bool, explore_option("grammar", "--grammar/--no-grammar")] = explore_default(
        "grammar"
    ),
    max_thought_chars: Annotated[int, explore_option("max_thought_chars")] = explore_default(
        "max_thought_chars"
    ),
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="llama.cpp context length.")] = 8192,
    tasks_file: TasksFileOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    resume: ResumeOption = None,
) -> None:
    """Independent sampling, iterative refinement and the rollback tree at an equal step budget.

    Per strategy: the share of tasks solved, the successful trajectories found per task (what Stage 2
    can learn from), the recoveries and the tokens spent. Every run is an ordinary run (`leafe runs`,
    open it with `leafe tui RUN`). Example: leafe ablate explore --suite code-suite:train --budget 12
    """
    from engine.ablation import create_explore_ablation, explore_ablation, run_explore_ablation
    from engine.events import ExplorerEvent, NodeCommitted
    from engine.explorer import ExploreConfig
    from engine.registry import open_backend, open_env
    from engine.runtime import check_n_ctx, env_spec_for, model_spec_for
    from engine.specs import EnvSpec, ModelSpec
    from engine.store import Store
    from engine.suites import suite_tasks

    database = db or paths.default_db()
    try:
        if resume is not None:
            store = Store(database, create=False)
            ablation = explore_ablation(store, resume)
            if ablation["status"] == "finished":
                raise SettingError(f"ablation {resume} already finished; nothing to resume")
            ablation_id = resume
        else:
            tasks = [*(tasks or []), *(suite_tasks(suite) if suite else [])]
            if not tasks:
                raise SettingError(
                    "give at least one task id (see `leafe tasks list`), a --suite or --resume ID"
                )
            check_n_ctx(n_ctx)
            config = ExploreConfig(
                max_depth=max_depth,
                reflect_every=reflect_every,
                seed=seed,
                temperature=temperature,
                reflect_temperature=reflect_temperature,
                max_tokens=max_tokens,
                grammar=grammar,
                max_thought_chars=max_thought_chars,
            )
            config.validate()
            chosen = tuple(s.strip() for s in strategies.split(",") if s.strip())
            spec = model_spec_for(
                model, adapter=adapter, db=database, n_ctx=n_ctx, backend=backend, base_url=base_url
            )
            if spec.adapter:
                config.adapter = spec.adapter
            env_specs = {task: env_spec_for(task, tasks_file) for task in tasks}
            store = Store(database)
            store.check_writable()
            ablation_id = create_explore_ablation(
                store, tasks, budget, config, model_spec=spec, env_specs=env_specs, strategies=chosen
            )
            ablation = store.ablation(ablation_id)
        spec = ModelSpec.from_json(ablation["model_spec"]) or ModelSpec()
        envs = {
            task: open_env(EnvSpec.from_json(text) or EnvSpec(task.split("/", 1)[0]))
            for task, text in ablation["settings"]["env_specs"].items()
        }
        with err.status(f"loading {spec.model}{' with its adapter' if spec.adapter else ''}…"):
            loaded = open_backend(spec)
        if note := loaded.sharing_note():
            err.print(f"[yellow]note:[/] {note}", highlight=False)
    except (LeafeError, OSError) as exc:
        raise fail_with(exc) from None

    def finished(strategy: str, task: str, run_id: int) -> None:
        totals = store.run_totals(run_id)
        err.print(
            f"ablation {ablation_id}: {strategy:<11} {task}: run {run_id}, {totals['steps']} steps, "
            f"{totals['successes']} successful episode(s)",
            highlight=False,
        )

    budget = ablation["settings"]["budget"]
    try:
        with err.status(f"ablation {ablation_id}: starting") as status:
            cells: dict[int, str] = {}  # run id -> "strategy task", read once per run

            def progress(event: ExplorerEvent) -> None:
                if isinstance(event, NodeCommitted) and event.node.step > 0:
                    if event.run_id not in cells:
                        run = store.get_run(event.run_id)
                        cells[event.run_id] = f"{run['config']['strategy']} {run['task_id']}"
                    status.update(
                        f"ablation {ablation_id}: {cells[event.run_id]}: "
                        f"step {store.steps_used(event.run_id)}/{budget}"
                    )

            run_explore_ablation(
                store, ablation_id, loaded, envs, model=spec.model, on_run=finished, on_event=progress
            )
    except KeyboardInterrupt:
        raise fail(
            f"interrupted: resume with `leafe ablate explore --resume {ablation_id} --db {store.path}`", 130
        ) from None
    except LeafeError as exc:
        raise fail(
            f"{exc.one_line()} (resume with `leafe ablate explore --resume {ablation_id}`)", 1
        ) from None
    finally:
        loaded.close()
    _show(store, ablation_id, as_json)


@ablate_app.command("list")
def ablate_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The stored ablations.

    Example: leafe ablate list --json
    """
    store = open_store(db)
    rows = [
        {
            "id": a["id"],
            "kind": a["kind"],
            "status": a["status"],
            "tasks": len(a["tasks"]),
            "budget": a["settings"].get("budget"),
            "created_at": a["created_at"],
        }
        for a in store.ablations()
    ]
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="ablations", title_justify="left")
    for column in ("id", "kind", "status", "tasks", "budget", "created"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["id"]), row["kind"], row["status"], str(row["tasks"]), str(row["budget"] or ""),
            row["created_at"][:19],
        )  # fmt: skip
    console.print(table)


@ablate_app.command("show")
def ablate_show(
    ablation_id: Annotated[int, typer.Argument(help="Ablation id from `leafe ablate list`.")],
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """One ablation's table (a partial one compares the tasks every strategy finished).

    Example: leafe ablate show 1
    """
    store = open_store(db)
    try:
        _show(store, ablation_id, as_json)
    except LeafeError as exc:
        raise fail_with(exc) from None


def _show(store: Any, ablation_id: int, as_json: bool) -> None:
    ablation = store.ablation(ablation_id)
    if ablation["kind"] == "distill":
        from leafe_tui.ablate_distill import show_distill

        show_distill(store, ablation, as_json)
        return
    from engine.ablation import report

    result = report(store, ablation_id)
    if as_json:
        print_json(result.as_dict())
        return
    console.print(explore_table(result))
    for r in result.results:
        console.print(f"[dim]{r.strategy} runs: {_runs(r.runs)}[/]", highlight=False)
    if not result.complete:
        console.print(
            f"[yellow]partial[/]: {len(result.tasks)} of {len(ablation['tasks'])} tasks finished by every "
            f"strategy; `leafe ablate explore --resume {ablation_id}` runs the rest"
        )
    console.print(f"[dim]open any run with `leafe tui RUN --db {store.path}`[/]", highlight=False)


def explore_table(result: Any) -> Any:
    from rich import box
    from rich.table import Table

    table = Table(
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        title=f"ablation {result.ablation_id}: {result.budget} environment steps per task and strategy, "
        f"{len(result.tasks)} task(s); tokens spent",
        title_justify="left",
    )
    columns = ("strategy", "solved", "succ./task", "recovered", "episodes", "prompt", "generated")
    for column in columns:
        table.add_column(column, justify="left" if column == "strategy" else "right", no_wrap=True)
    for r in result.results:
        table.add_row(
            r.strategy,
            f"{r.solved}/{r.tasks}",
            f"{r.successes_per_task:.2f}",
            str(r.recovered),
            str(r.episodes),
            f"{r.prompt_tokens:,}",
            f"{r.generated_tokens:,}",
        )
    return table


def _runs(runs: tuple[int, ...]) -> str:
    return ", ".join(map(str, runs[:6])) + (" …" if len(runs) > 6 else "")


@ablate_app.command("distill")
def ablate_distill(
    held_out: Annotated[
        list[str] | None, typer.Argument(help="Held-out task ids to evaluate on (never explored).")
    ] = None,
    from_ablation: Annotated[
        int | None,
        typer.Option("--from-ablation", help="Use the tree runs of this `ablate explore` ablation."),
    ] = None,
    runs: Annotated[
        str | None, typer.Option("--runs", help="Comma-separated run ids to build both datasets from.")
    ] = None,
    suite: SuiteOption = None,
    examples: Annotated[
        int, typer.Option("--examples", help="Examples per dataset [default: the smaller natural size].")
    ] = 0,
    samples: Annotated[int, typer.Option("-n", "--samples", help="Rollouts per held-out task.")] = 16,
    k: Annotated[str, typer.Option("--k", help="Comma-separated k of pass@k, each at most -n.")] = "1,4,16",
    base: Annotated[str, typer.Option("--base", help="Base model [default: the runs' model].")] = "",
    epochs: Annotated[int, typer.Option(help="Passes over the training examples (both arms).")] = 2,
    lr: Annotated[float, typer.Option(help="Peak learning rate (both arms).")] = 1e-4,
    rank: Annotated[int, typer.Option(help="LoRA rank (both arms).")] = 16,
    grad_accum: Annotated[int, typer.Option("--grad-accum", help="Examples per optimiser step.")] = 4,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Stop each training after this many steps.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the datasets, training and sampling.")] = 0,
    with_base: Annotated[
        bool, typer.Option("--with-base/--no-base", help="Evaluate the base model beside both adapters.")
    ] = True,
    db: DbOption = None,
    as_json: JsonOption = False,
    resume: ResumeOption = None,
) -> None:
    """Rehearsal only against rehearsal + counterfactual, evaluated on held-out tasks.

    Same data budget and training settings for both adapters; they and the base model are evaluated
    on the held-out tasks and compared.

    Example: leafe ablate distill --from-ablation 1 --suite humaneval:held-out -n 16 --k 1,4,16
    """
    from engine.ablation import tree_runs
    from engine.suites import suite_tasks
    from leafe_tui.eval_cmd import parse_ks
    from trainer.distill_ablation import DistillSettings, create_distill_ablation, run_distill_ablation
    from trainer.train import TrainError

    store = open_store(db, create=False)
    try:  # everything that can be refused, before anything is recorded: a user's mistake, exit 2
        if resume is not None:
            ablation_id = resume
            if store.ablation(resume)["status"] == "finished":
                raise SettingError(f"ablation {resume} already finished; nothing to resume")
        else:
            if (from_ablation is None) == (runs is None):
                raise SettingError("give the runs to learn from: --from-ablation ID or --runs 1,2,3")
            if from_ablation is not None:
                chosen = tree_runs(store, from_ablation)
            else:
                chosen = tuple(int(part) for part in (runs or "").split(",") if part.strip())
            tasks = [*(held_out or []), *(suite_tasks(suite) if suite else [])]
            settings = DistillSettings(
                runs=tuple(chosen),
                held_out=tuple(tasks),
                examples=examples,
                samples=samples,
                ks=tuple(parse_ks(k, samples)),
                base=base,
                epochs=epochs,
                lr=lr,
                rank=rank,
                grad_accum=grad_accum,
                max_steps=max_steps,
                seed=seed,
                with_base=with_base,
            )
            ablation_id = create_distill_ablation(store, settings)
    except (LeafeError, OSError, ValueError) as exc:
        raise fail_with(exc) from None
    resume_hint = f"resume with `leafe ablate distill --resume {ablation_id} --db {store.path}`"
    try:
        run_distill_ablation(store, ablation_id, log=lambda line: err.print(line, highlight=False))
    except KeyboardInterrupt:
        raise fail(f"interrupted: {resume_hint}", 130) from None
    except (LeafeError, TrainError, OSError, ValueError) as exc:
        message = exc.one_line() if isinstance(exc, LeafeError) else str(exc)
        raise fail(f"{message} ({resume_hint})", 1) from None
    _show(store, ablation_id, as_json)
