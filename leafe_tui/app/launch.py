"""Starting the app from the CLI (``leafe tui``, ``leafe explore --tui``): user mistakes are caught
here, before the screen switches, and end as one line on stderr with exit code 2."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from engine.errors import LeafeError
from engine.store import Store
from leafe_tui.app.keys import load_keymap
from leafe_tui.app.worker import ExploreJob, default_backend_factory, default_env_factory


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
            backend_factory=default_backend_factory(),
            env_factory=default_env_factory(tasks_file),
            job=job,
            run_id=run_id,
            keymap=keymap,
            n_ctx=n_ctx,
            cache=cache,
        )
    except LeafeError as exc:
        err.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False)
        return 2
    app.run()
    if app.busy:
        err.print("finishing the step in flight; the run stays resumable (leafe explore --resume RUN)")
    return 0


def explore_in_tui(request, *, err: Console) -> int:  # request: leafe_tui.explore_cmd.ExploreRequest
    """``leafe explore … --tui``: check the request (and claim a run to resume), then open the app with
    the work running."""
    from engine.explorer import ExploreConfig
    from engine.runtime import check_adapter_file, env_spec_for, model_spec_for, run_model_spec
    from leafe_tui.explore_cmd import claim_for_resume, resumable_run

    try:
        if request.resume is not None:
            store = Store(request.db, create=False)
            try:
                run = resumable_run(store, request.resume, model=request.model, adapter=request.adapter)
                spec = run_model_spec(run)
                if spec.adapter:
                    check_adapter_file(Path(spec.adapter))
                _check_model(spec.model)
                store.check_writable()
                claim_for_resume(store, request.resume, force=request.force)
            finally:
                store.close()
            job = ExploreJob("resume", run_id=request.resume)
        else:
            spec = model_spec_for(
                request.model,
                adapter=request.adapter,
                db=request.db,
                n_ctx=request.n_ctx,
                cache=request.cache,
            )
            for task in request.tasks:
                env_spec_for(task, request.tasks_file)
            ExploreConfig.from_dict(request.config).validate()
            store = Store(request.db)
            try:
                store.check_writable()
            finally:
                store.close()
            _check_model(spec.model)
            tasks_file = str(request.tasks_file.expanduser().resolve()) if request.tasks_file else None
            job = ExploreJob(
                "start",
                tasks=tuple(request.tasks),
                model_spec=spec,
                tasks_file=tasks_file,
                config=request.config,
            )
    except (LeafeError, OSError) as exc:
        err.print(
            f"[bold red]error:[/] {exc.one_line() if isinstance(exc, LeafeError) else exc}", highlight=False
        )
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
    except ModelError:
        raise
