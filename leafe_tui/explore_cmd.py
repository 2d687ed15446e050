"""``leafe explore``: resolve the model, open the store, run (or resume) the explorer with a live view."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from engine.errors import LeafeError
from engine.events import BranchChanged, ExplorerEvent, NodeCommitted, ReflectionMade, RunChanged
from engine.explorer import ExploreConfig, Explorer
from engine.run_tree import RunTree
from engine.runtime import (
    SettingError,
    check_adapter_file,
    check_n_ctx,
    check_workers,
    env_spec_for,
    model_spec_for,
    resolve_adapter,
    run_env_spec,
    run_model_spec,
    same_model,
    with_workers,
)
from engine.specs import EnvSpec, ModelSpec
from engine.store import RunBusy, Store
from leafe_tui.render import node_label, totals_line, tree_renderable


@dataclass
class ExploreRequest:
    tasks: list[str]
    model: str
    db: Path
    resume: int | None = None
    tasks_file: Path | None = None
    n_ctx: int = 8192
    cache: bool = True
    as_json: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    adapter: str | None = None  # an adapter id from `leafe adapters` or a GGUF LoRA file
    force: bool = False  # resume a run even if its recorded explorer looks alive
    backend: str = "llama.cpp"
    base_url: str | None = None  # a served model's server (backend openai)
    workers: int = 1  # runs explored at once (a served model only)
    reflect_model: str = ""  # a separate reflection model: name, GGUF path or served name
    reflect_base_url: str | None = None  # ... served by this server
    reflect_spec: ModelSpec | None = None  # filled in by _prepare (new from the flags, or the run's)
    model_spec: ModelSpec | None = None  # filled in by _prepare: new from the flags, or the run's own
    env_specs: dict[str, EnvSpec] = field(default_factory=dict)


USER_ERRORS = (LeafeError, OSError)
Job = tuple[str, dict[str, Any] | None]  # a task and, when resuming, the run that continues it


class LiveView:
    """The run's tree and figures while the explorer commits: a RunTree updated one event at a time
    (a row read per event, never the whole run), drawn by Live at its own refresh rate."""

    def __init__(self, store: Store, live: Live | None, console: Console) -> None:
        self.store = store
        self.live = live
        self.console = console
        self.trees: dict[int, RunTree] = {}
        self.drawings: dict[int, _LiveDrawing] = {}

    def __call__(self, event: ExplorerEvent) -> None:
        if self.live is not None:
            tree = self._update(event)
            drawing = self.drawings.setdefault(event.run_id, _LiveDrawing(tree, self.store))
            if self.live.renderable is not drawing:
                self.live.update(drawing)
        elif isinstance(event, NodeCommitted) and event.node.step > 0:  # step 0: the first observation
            line = Text(f"run {event.run_id} branch #{event.node.branch_id} ")
            self.console.print(line + node_label(event.node.__dict__), highlight=False)
        elif isinstance(event, ReflectionMade):
            what = event.parse_error or (
                f"roll back to step {event.rollback_step}: {event.summary}"
                if event.rollback_step
                else "no rollback"
            )
            self.console.print(
                f"run {event.run_id} reflection at node {event.node_id}: {what}", highlight=False
            )

    def _update(self, event: ExplorerEvent) -> RunTree:
        tree = self.trees.get(event.run_id)
        if tree is None:  # the run's first event (a resumed run: what it has so far)
            tree = self.trees[event.run_id] = RunTree.load(self.store, event.run_id)
            return tree
        if isinstance(event, NodeCommitted):
            tree.add_node(event.node)
        elif isinstance(event, BranchChanged):
            tree.set_branch(self.store.branch(event.branch_id))
        elif isinstance(event, RunChanged):
            tree.run["status"] = event.status
        return tree


class _LiveDrawing:
    """Rendered by Rich when the Live refreshes (at most a few times a second), not at every event."""

    def __init__(self, tree: RunTree, store: Store) -> None:
        self.tree, self.store = tree, store

    def __rich__(self) -> Group:
        totals = self.store.run_totals(self.tree.run_id)
        budget = self.tree.run["config"].get("budget")
        return Group(totals_line(totals, budget), tree_renderable(self.tree, compact=True))


def resumable_run(
    store: Store, run_id: int, *, model: str = "", adapter: str | None = None
) -> dict[str, Any]:
    """The run to resume, or SettingError saying why it cannot be resumed.

    A resumed run keeps the model (and adapter) it was explored with: its nodes would otherwise mix
    two policies while the run records one. Everything else comes from its record too.
    """
    run = store.get_run(run_id)
    if run["status"] == "finished":
        raise SettingError(f"run {run_id} already finished; nothing to resume")
    spec = run_model_spec(run)
    if model and not same_model(model, spec.model):
        raise SettingError(
            f"run {run_id} was explored with {spec.model}, not {model}: a resumed run keeps its model",
            hint="leave out --model, or start a new run",
        )
    if adapter and not _same_adapter(adapter, spec.adapter, store.path):
        was = f"with the adapter {spec.adapter}" if spec.adapter else "without an adapter"
        raise SettingError(
            f"run {run_id} was explored {was}: a resumed run keeps it", hint="leave out --adapter"
        )
    return run


def claim_for_resume(store: Store, run_id: int, *, force: bool) -> dict[str, Any]:
    """Make this process the run's explorer before anything slow happens (two resumes cannot both run)."""
    try:
        return store.claim_run(run_id, force=force)
    except RunBusy as exc:
        raise SettingError(str(exc), hint="if that process is gone, add --force") from None


def release_claim(store: Store, run: dict[str, Any]) -> None:
    """Give back a run claimed by ``claim_for_resume`` when the resume could not start."""
    status = run["status"] if run["status"] != "running" else "interrupted"
    store.set_run_status(run["id"], status, error=run["error"])


def _same_adapter(ref: str, recorded: str | None, db: Path) -> bool:
    if recorded is None:
        return False
    if ref == recorded:
        return True
    _, path, _ = resolve_adapter(ref, db, "")
    return path == Path(recorded).expanduser().resolve()


def load_backend(request: ExploreRequest, err: Console):
    """Open the request's model (its ``model_spec``, pulling the weights if needed); returns
    (model name, backend). Everything about the spec was checked before, in ``_prepare``."""
    from engine.registry import open_backend

    spec = request.model_spec or model_spec_for(
        request.model, adapter=request.adapter, db=request.db, n_ctx=request.n_ctx, cache=request.cache
    )
    request.model_spec = spec
    if spec.adapter:
        request.config["adapter"] = spec.adapter
    what = spec.model + (f" with adapter {Path(spec.adapter).name}" if spec.adapter else "")
    with err.status(f"loading {what} ({spec.backend})…"):
        backend = open_backend(with_workers(spec, request.workers if request.resume is None else 1))
    if note := backend.sharing_note():
        err.print(f"[yellow]note:[/] {note}", highlight=False)
    return spec.model, backend


def load_reflector(request: ExploreRequest, err: Console):
    """The separate reflection model the request names (None: the actor reflects)."""
    from engine.registry import open_backend

    if request.reflect_spec is None:
        return None
    with err.status(
        f"loading the reflection model {request.reflect_spec.model} ({request.reflect_spec.backend})…"
    ):
        return open_backend(
            with_workers(request.reflect_spec, request.workers if request.resume is None else 1)
        )


def _reflect_spec(request: ExploreRequest) -> ModelSpec | None:
    """The checked spec of ``--reflect-model`` (served with ``--reflect-base-url``). Two in-process
    models never decode at once, so they share one claim on the cores (engine/cores.py)."""
    if not request.reflect_model and not request.reflect_base_url:
        return None
    spec = model_spec_for(
        request.reflect_model,
        n_ctx=request.n_ctx,
        backend="openai" if request.reflect_base_url else "llama.cpp",
        base_url=request.reflect_base_url,
    )
    if spec.backend == "llama.cpp" and request.model_spec and request.model_spec.backend == "llama.cpp":
        group = {"core_group": "explore"}
        request.model_spec = dataclasses.replace(
            request.model_spec, options={**request.model_spec.options, **group}
        )
        spec = dataclasses.replace(spec, options={**spec.options, **group})
    return spec


def _prepare(request: ExploreRequest) -> tuple[Store, list[Job], dict[str, Any]]:
    """Everything that can fail before the model loads: the database (writable), the runs, the tasks,
    the settings, the model and adapter references. Returns the store, the (task, run to resume)
    jobs and the environments."""
    from engine.registry import shared_envs

    check_n_ctx(request.n_ctx)
    if request.resume is None:  # a new run's settings and tasks are checked before any file is made
        ExploreConfig.from_dict(request.config).validate()
        request.env_specs = {task: env_spec_for(task, request.tasks_file) for task in request.tasks}
        request.model_spec = model_spec_for(
            request.model,
            adapter=request.adapter,
            db=request.db,
            n_ctx=request.n_ctx,
            cache=request.cache,
            backend=request.backend,
            base_url=request.base_url,
        )
        request.reflect_spec = _reflect_spec(request)
        check_workers(request.model_spec, request.workers)
        if request.reflect_spec is not None:  # every worker's reflections go to it too
            check_workers(request.reflect_spec, request.workers)
    store = Store(request.db, create=request.resume is None)  # resuming never creates a file
    try:
        jobs: list[Job]
        if request.resume is not None:
            run = resumable_run(store, request.resume, model=request.model, adapter=request.adapter)
            jobs = [(run["task_id"], run)]
            request.model_spec = run_model_spec(run)
            if request.base_url and request.model_spec.backend == "openai":  # the server moved
                request.model_spec = dataclasses.replace(request.model_spec, base_url=request.base_url)
            request.reflect_spec = ModelSpec.from_json(run.get("reflect_spec"))
            if request.model_spec.adapter:
                check_adapter_file(Path(request.model_spec.adapter))
            ExploreConfig.from_dict(run["config"]).validate()
            request.env_specs = {run["task_id"]: run_env_spec(run, request.tasks_file)}
        else:
            jobs = [(task, None) for task in request.tasks]
        envs = shared_envs(request.env_specs)
        store.check_writable()
    except BaseException:
        store.close()
        raise
    return store, jobs, envs


def run_explore(request: ExploreRequest, *, console: Console, err: Console) -> int:
    """Run the request; return the process exit code."""
    try:
        store, jobs, envs = _prepare(request)
    except USER_ERRORS as exc:
        err.print(f"[bold red]error:[/] {_one_line(exc)}", highlight=False)
        return 2
    claimed: dict[str, Any] | None = None
    try:
        if request.resume is not None:
            claimed = claim_for_resume(store, request.resume, force=request.force)
        model_name, backend = load_backend(request, err)  # records the adapter in request.config
        try:
            reflector = load_reflector(request, err)
        except BaseException:
            backend.close()
            raise
    except BaseException as exc:
        if claimed is not None:
            release_claim(store, claimed)
        store.close()
        if not isinstance(exc, USER_ERRORS):
            raise
        err.print(f"[bold red]error:[/] {_one_line(exc)}", highlight=False)
        return 2
    stored = jobs[0][1]["config"] if jobs[0][1] else None
    config = ExploreConfig.from_dict(stored or request.config)
    if request.workers > 1:
        try:
            return _run_parallel(request, store, jobs, (backend, reflector), model_name, config, console, err)
        finally:
            _close(backend, reflector, *{id(e): e for e in envs.values()}.values())

    run_ids: list[int] = []
    interactive = console.is_terminal and not request.as_json
    try:
        for task, existing in jobs:
            with (
                Live(console=console, refresh_per_second=4, transient=False)
                if interactive
                else contextlib.nullcontext() as live
            ):
                view = LiveView(store, live if interactive else None, err if request.as_json else console)
                explorer = Explorer(store, backend, envs[task], config, on_event=view, reflector=reflector)
                if existing is not None:
                    run_ids.append(explorer.resume(existing["id"]))
                else:
                    run_ids.append(
                        explorer.start(
                            task,
                            model_name,
                            model_spec=request.model_spec,
                            env_spec=request.env_specs.get(task),
                            reflect_spec=request.reflect_spec,
                        )
                    )
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: resume with "
            f"`leafe explore --resume {_last_run(store)} --db {store.path}`"
        )
        return 130
    except LeafeError as exc:
        err.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False)
        return 1
    finally:
        _close(backend, reflector, *{id(e): e for e in envs.values()}.values())

    if request.as_json:
        sys.stdout.write(json.dumps([store.tree(r) for r in run_ids], indent=2, default=str) + "\n")
        return 0
    for run_id in run_ids:
        data = store.tree(run_id)
        if not interactive:
            console.print(tree_renderable(RunTree.load(store, run_id)))
        console.print(totals_line(data["totals"], data["run"]["config"].get("budget")))
    console.print(f"database: {store.path}  (leafe tree {run_ids[-1]} --db {store.path})", highlight=False)
    return 0


def _close(*opened) -> None:
    """Close models and environments (a JVM, a browser) that were opened."""
    for thing in opened:
        if thing is not None:
            thing.close()


def _run_parallel(
    request, store: Store, jobs: list[Job], models, model_name: str, config, console, err
) -> int:
    """``--workers N``: the tasks explored N at once; a line per run as it ends, then the totals."""
    from engine.parallel_explore import ExploreJob, explore_many

    work = [
        ExploreJob(task, request.env_specs[task], existing["id"] if existing else None)
        for task, existing in jobs
    ]
    out = err if request.as_json else console

    def done(job: ExploreJob, run_id: int) -> None:
        totals = store.tree(run_id)["totals"]
        out.print(
            f"run {run_id} {job.task_id}: {store.get_run(run_id)['status']}, "
            f"{totals['successes']} successes in {totals['episodes']} episodes",
            highlight=False,
        )

    backend, reflector = models
    try:
        run_ids = explore_many(
            store.path,
            backend,
            work,
            config,
            model_name=model_name,
            model_spec=request.model_spec,
            workers=request.workers,
            on_run_done=done,
            reflector=reflector,
            reflect_spec=request.reflect_spec,
        )
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: resume each unfinished run with "
            f"`leafe explore --resume RUN --db {store.path}`"
        )
        return 130
    except LeafeError as exc:
        err.print(
            f"[bold red]error:[/] {exc.one_line()} "
            "(unfinished runs resume with `leafe explore --resume RUN`)",
            highlight=False,
        )
        return 1
    if request.as_json:
        sys.stdout.write(json.dumps([store.tree(r) for r in run_ids], indent=2, default=str) + "\n")
        return 0
    for run_id in run_ids:
        console.print(totals_line(store.tree(run_id)["totals"], config.budget))
    console.print(f"database: {store.path}  (leafe runs --db {store.path})", highlight=False)
    return 0


def _one_line(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, LeafeError) else str(exc)


def _last_run(store: Store) -> int | str:
    runs = store.list_runs()
    return runs[-1]["id"] if runs else "RUN"
