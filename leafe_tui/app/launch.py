"""Starting the app from the CLI (``leafe tui``, ``leafe explore --tui``): user mistakes are caught
here, before the screen switches, and end as one line on stderr with exit code 2."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from engine.envs.base import TaskNotFound
from engine.store import Store, StoreError
from leafe_tui.app.keys import load_keymap
from leafe_tui.app.worker import ExploreJob, default_env_factory, llama_backend_factory
from leafe_tui.config import ConfigError


def open_tui(
    db: Path,
    *,
    run_id: int | None = None,
    job: ExploreJob | None = None,
    tasks_file: Path | None = None,
    n_ctx: int = 8192,
    cache: bool = True,
    err: Console,
) -> int:
    """Run the app on ``db``; returns the exit code."""
    from leafe_tui.app.app import LeafeApp

    try:
        keymap = load_keymap()
        if run_id is not None:
            store = Store(db, create=False)
            try:
                store.get_run(run_id)
            finally:
                store.close()
        app = LeafeApp(
            db,
            backend_factory=llama_backend_factory(n_ctx=n_ctx, cache=cache),
            env_factory=default_env_factory(tasks_file),
            job=job,
            run_id=run_id,
            keymap=keymap,
        )
    except (ConfigError, StoreError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    app.run()
    if app.busy:
        err.print("finishing the step in flight; the run stays resumable (leafe explore --resume RUN)")
    return 0


def explore_in_tui(request, *, err: Console) -> int:  # request: leafe_tui.explore_cmd.ExploreRequest
    """``leafe explore … --tui``: check the request (and claim a run to resume), then open the app with
    the work running."""
    from engine.envs import env_for_task
    from engine.explorer import ExploreConfig
    from leafe_tui.explore_cmd import (
        check_adapter_file,
        check_n_ctx,
        claim_for_resume,
        resolve_adapter,
        resumable_run,
    )

    try:
        check_n_ctx(request.n_ctx)
        if request.resume is not None:
            store = Store(request.db, create=False)
            try:
                run = resumable_run(store, request.resume, model=request.model, adapter=request.adapter)
                if run["config"].get("adapter"):
                    check_adapter_file(Path(run["config"]["adapter"]))
                _check_model(run["model"])
                store.check_writable()
                claim_for_resume(store, request.resume, force=request.force)
            finally:
                store.close()
            job = ExploreJob("resume", run_id=request.resume, model=run["model"])
            request.model = run["model"]
        else:
            if request.adapter:
                request.model, lora = resolve_adapter(request.adapter, request.db, request.model)
                check_adapter_file(lora)
                request.config["adapter"] = str(lora)
            for task in request.tasks:
                env_for_task(task, tasks_file=request.tasks_file)
            ExploreConfig.from_dict(request.config).validate()
            store = Store(request.db)
            try:
                store.check_writable()
            finally:
                store.close()
            _check_model(request.model)
            job = ExploreJob("start", tasks=tuple(request.tasks), model=request.model, config=request.config)
    except (ValueError, TaskNotFound, StoreError, OSError) as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return 2
    return open_tui(
        request.db,
        run_id=request.resume,
        job=job,
        tasks_file=request.tasks_file,
        n_ctx=request.n_ctx,
        cache=request.cache,
        err=err,
    )


def _check_model(name: str) -> None:
    """An unknown model name fails here; a known one that is not downloaded yet is pulled by the worker."""
    from engine.models import DEFAULT_MODEL, MODELS, ModelError, resolve_model

    if not name or name in MODELS:
        return
    try:
        resolve_model(name or DEFAULT_MODEL, pull_missing=False)
    except ModelError as exc:
        raise ValueError(str(exc)) from None
