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
from engine.store import Store, StoreError
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


def resumable_run(store: Store, run_id: int) -> dict[str, Any]:
    """The run to resume, or ValueError saying why it cannot be resumed."""
    run = store.get_run(run_id)
    if Store.effective_status(run) == "running":
        raise ValueError(f"run {run_id} is still running in another process (pid {run['pid']})")
    if run["status"] == "finished":
        raise ValueError(f"run {run_id} already finished; nothing to resume")
    return run


def resolve_adapter(spec: str, db: Path, model: str) -> tuple[str, Path]:
    """An adapter id (from the store) or a GGUF LoRA path, checked against the model it will run on.

    Returns the model to use (the adapter's base when ``model`` is empty) and the GGUF LoRA path.
    """
    if not spec.isdigit():
        path = Path(spec).expanduser()
        if not path.is_file():
            raise ValueError(f"no adapter file {path}: --adapter takes an id (`leafe adapters`) or a .gguf")
        return model, path.resolve()
    store = Store(db, create=False)
    try:
        row = store.adapter(int(spec))
    finally:
        store.close()
    path = Path(row["gguf_path"] or "")
    if not path.is_file():
        raise ValueError(f"adapter {spec}: its GGUF file {path} is missing (was the job folder deleted?)")
    if model and row["base_gguf"] and not _same_model(model, row["base"], Path(row["base_gguf"])):
        base = row["base"]
        raise ValueError(f"adapter {spec} was trained on {base}, not {model}: use --model {base}")
    return model or row["base"], path


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

    lora = None
    if request.adapter:
        request.model, lora = resolve_adapter(request.adapter, request.db, request.model)
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


def run_explore(request: ExploreRequest, *, console: Console, err: Console) -> int:
    """Run the request; return the process exit code."""
    try:
        store = Store(request.db)
        if request.resume is not None:
            run = resumable_run(store, request.resume)
            jobs = [(run["task_id"], run)]
            request.model = request.model or run["model"]
            request.adapter = request.adapter or run["config"].get("adapter")
        else:
            jobs = [(task, None) for task in request.tasks]
        envs = {task: env_for_task(task, tasks_file=request.tasks_file) for task, _ in jobs}
        stored = jobs[0][1]["config"] if jobs[0][1] else None
        ExploreConfig.from_dict(stored or request.config).validate()  # before the slow model load
        model_name, backend = load_backend(request, err)  # records the adapter in request.config
        config = ExploreConfig.from_dict(stored or request.config)
    except (ValueError, TaskNotFound, StoreError, BackendError, OSError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2

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
    except (BackendError, ReplayMismatch) as exc:
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
