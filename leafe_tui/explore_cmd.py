"""``leafe explore``: resolve the model, open the store, run (or resume) the explorer with a live view."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from engine.backends.base import BackendError
from engine.envs import env_for_task
from engine.envs.base import TaskNotFound
from engine.explorer import ExploreConfig, Explorer, ExplorerEvent, ReplayMismatch
from engine.store import RunBusy, Store, StoreError
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


USER_ERRORS = (ValueError, TaskNotFound, StoreError, BackendError, OSError)
Job = tuple[str, dict[str, Any] | None]  # a task and, when resuming, the run that continues it


class LiveView:
    """Redraws the run's tree and figures whenever the explorer commits something."""

    def __init__(self, store: Store, live: Live | None, console: Console) -> None:
        self.store = store
        self.live = live
        self.console = console

    def __call__(self, event: ExplorerEvent) -> None:
        if self.live is not None:
            data = self.store.tree(event.run_id)
            budget = data["run"]["config"].get("budget")
            self.live.update(Group(totals_line(data["totals"], budget), tree_renderable(data, compact=True)))
        elif event.kind == "node" and event.data["step"] > 0:  # step 0 is the first observation
            line = Text(f"run {event.run_id} branch #{event.data['branch_id']} ")
            self.console.print(line + node_label(event.data), highlight=False)
        elif event.kind == "reflection":
            data = event.data
            what = data["parse_error"] or (
                f"roll back to step {data['rollback_step']}: {data['summary']}"
                if data["rollback_step"]
                else "no rollback"
            )
            self.console.print(
                f"run {event.run_id} reflection at node {data['node_id']}: {what}", highlight=False
            )


def resumable_run(
    store: Store, run_id: int, *, model: str = "", adapter: str | None = None
) -> dict[str, Any]:
    """The run to resume, or ValueError saying why it cannot be resumed.

    A resumed run keeps the model (and adapter) it was explored with: its nodes would otherwise mix
    two policies while the run records one.
    """
    run = store.get_run(run_id)
    if run["status"] == "finished":
        raise ValueError(f"run {run_id} already finished; nothing to resume")
    if model and not same_model(model, run["model"]):
        raise ValueError(
            f"run {run_id} was explored with {run['model']}, not {model}: a resumed run keeps its model "
            "(leave out --model, or start a new run)"
        )
    recorded = run["config"].get("adapter")
    if adapter and not _same_adapter(adapter, recorded, store.path):
        was = f"with the adapter {recorded}" if recorded else "without an adapter"
        raise ValueError(f"run {run_id} was explored {was}: a resumed run keeps it (leave out --adapter)")
    return run


def claim_for_resume(store: Store, run_id: int, *, force: bool) -> dict[str, Any]:
    """Make this process the run's explorer before anything slow happens (two resumes cannot both run)."""
    try:
        return store.claim_run(run_id, force=force)
    except RunBusy as exc:
        raise ValueError(f"{exc}; if that process is gone, add --force") from None


def release_claim(store: Store, run: dict[str, Any]) -> None:
    """Give back a run claimed by ``claim_for_resume`` when the resume could not start."""
    status = run["status"] if run["status"] != "running" else "interrupted"
    store.set_run_status(run["id"], status, error=run["error"])


def same_model(a: str, b: str) -> bool:
    """Whether two model names or paths name the same GGUF file (without downloading anything)."""
    from engine.models import ModelError, resolve_model

    if a == b:
        return True
    try:
        return resolve_model(a, pull_missing=False) == resolve_model(b, pull_missing=False)
    except ModelError:
        return False


def _same_adapter(spec: str, recorded: str | None, db: Path) -> bool:
    if recorded is None:
        return False
    if spec == recorded:
        return True
    _, path = resolve_adapter(spec, db, "")
    return path == Path(recorded).expanduser().resolve()


def resolve_adapter(spec: str, db: Path, model: str) -> tuple[str, Path]:
    """An adapter id (from the store) or a GGUF LoRA path, checked against the model it will run on.

    Returns the model to use (the adapter's base when ``model`` is empty) and the GGUF LoRA path
    (``check_adapter_file`` checks its contents).
    """
    if not spec.isdigit():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"no adapter file {path}: --adapter takes an id (`leafe adapters`) or a .gguf")
        row = None
    else:
        try:
            store = Store(db, create=False)
            try:
                row = store.adapter(int(spec))
            finally:
                store.close()
        except StoreError as exc:
            raise ValueError(str(exc)) from None
        path = Path(row["gguf_path"] or "")
        if not path.is_file():
            raise ValueError(f"adapter {spec}: its GGUF file {path} is missing (was the job folder deleted?)")
        if model and row["base_gguf"] and not _same_model(model, row["base"], Path(row["base_gguf"])):
            base = row["base"]
            raise ValueError(f"adapter {spec} was trained on {base}, not {model}: use --model {base}")
    return (model or row["base"]) if row else model, path.resolve()


def check_adapter_file(path: Path) -> None:
    """ValueError unless ``path`` is a whole GGUF LoRA adapter: llama.cpp crashes on anything else."""
    from engine.backends.llama import check_lora_adapter

    try:
        check_lora_adapter(path)
    except BackendError as exc:
        raise ValueError(str(exc)) from None


def check_n_ctx(n_ctx: int) -> None:
    from engine.backends.llama import MIN_N_CTX

    if n_ctx < MIN_N_CTX:
        raise ValueError(f"--n-ctx must be at least {MIN_N_CTX} tokens, not {n_ctx}")


def _same_model(model: str, base: str, base_gguf: Path) -> bool:
    """Whether ``model`` (a name or a GGUF path) is the model an adapter was trained on."""
    from engine.models import MODELS

    if model == base:
        return True
    if model in MODELS:
        return MODELS[model].filename == base_gguf.name
    return Path(model).expanduser().resolve() == base_gguf.resolve()


def load_backend(request: ExploreRequest, err: Console):
    """Resolve (pulling if needed) and load the request's model; returns (model name, backend)."""
    from engine.backends.llama import LlamaCppBackend
    from engine.models import DEFAULT_MODEL, ModelError, resolve_model

    check_n_ctx(request.n_ctx)
    lora = None
    if request.adapter:
        request.model, lora = resolve_adapter(request.adapter, request.db, request.model)
        check_adapter_file(lora)
        request.config["adapter"] = str(lora)
    name = request.model or DEFAULT_MODEL
    try:
        path = resolve_model(name)
    except ModelError as exc:
        raise ValueError(str(exc)) from None
    what = f"{path.name} with adapter {lora.name}" if lora else path.name
    with err.status(f"loading {what} into llama.cpp…"):
        backend = LlamaCppBackend(path, n_ctx=request.n_ctx, reuse_prefix=request.cache, lora_path=lora)
    return name, backend


def _prepare(request: ExploreRequest) -> tuple[Store, list[Job], dict[str, Any]]:
    """Everything that can fail before the model loads: the database (writable), the runs, the tasks,
    the settings. Returns the store, the (task, run to resume) jobs and the environments."""
    check_n_ctx(request.n_ctx)
    if request.resume is None:  # a new run's settings and tasks are checked before any file is made
        ExploreConfig.from_dict(request.config).validate()
        envs = {task: env_for_task(task, tasks_file=request.tasks_file) for task in request.tasks}
    store = Store(request.db, create=request.resume is None)  # resuming never creates a file
    try:
        jobs: list[Job]
        if request.resume is not None:
            run = resumable_run(store, request.resume, model=request.model, adapter=request.adapter)
            jobs = [(run["task_id"], run)]
            request.model = run["model"]
            request.adapter = run["config"].get("adapter")
            ExploreConfig.from_dict(run["config"]).validate()
            envs = {run["task_id"]: env_for_task(run["task_id"], tasks_file=request.tasks_file)}
        else:
            jobs = [(task, None) for task in request.tasks]
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
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    claimed: dict[str, Any] | None = None
    try:
        if request.resume is not None:
            claimed = claim_for_resume(store, request.resume, force=request.force)
        model_name, backend = load_backend(request, err)  # records the adapter in request.config
    except BaseException as exc:
        if claimed is not None:
            release_claim(store, claimed)
        store.close()
        if not isinstance(exc, USER_ERRORS):
            raise
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    stored = jobs[0][1]["config"] if jobs[0][1] else None
    config = ExploreConfig.from_dict(stored or request.config)

    run_ids: list[int] = []
    interactive = console.is_terminal and not request.as_json
    try:
        for task, existing in jobs:
            with (
                Live(console=console, refresh_per_second=4, transient=False)
                if interactive
                else _Null() as live
            ):
                view = LiveView(store, live if interactive else None, err if request.as_json else console)
                explorer = Explorer(store, backend, envs[task], config, on_event=view)
                if existing is not None:
                    run_ids.append(explorer.resume(existing["id"]))
                else:
                    run_ids.append(explorer.start(task, model_name))
    except KeyboardInterrupt:
        err.print(
            "[yellow]interrupted[/]: resume with "
            f"`leafe explore --resume {_last_run(store)} --db {store.path}`"
        )
        return 130
    except (BackendError, ReplayMismatch, StoreError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 1
    finally:
        backend.close()

    if request.as_json:
        sys.stdout.write(json.dumps([store.tree(r) for r in run_ids], indent=2, default=str) + "\n")
        return 0
    for run_id in run_ids:
        data = store.tree(run_id)
        if not interactive:
            console.print(tree_renderable(data))
        console.print(totals_line(data["totals"], data["run"]["config"].get("budget")))
    console.print(f"database: {store.path}  (leafe tree {run_ids[-1]} --db {store.path})", highlight=False)
    return 0


def _last_run(store: Store) -> int | str:
    runs = store.list_runs()
    return runs[-1]["id"] if runs else "RUN"


class _Null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
