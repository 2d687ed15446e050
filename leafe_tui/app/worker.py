"""Explorer work in a thread: load the model, start / resume / re-branch runs, post what happens.

The thread opens its own Store on the database file (SQLite connections belong to one thread; WAL
lets the screen read while the explorer writes) and turns every ExplorerEvent into a Message for
the app. ``App.post_message`` is thread-safe, so nothing here touches a widget.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from textual.message import Message

from engine.backends.base import BackendError, ModelBackend
from engine.envs.base import Environment, TaskNotFound
from engine.explorer import ExploreConfig, Explorer, ExplorerEvent, ReplayMismatch
from engine.store import Store, StoreError

BackendFactory = Callable[..., ModelBackend]  # (model, adapter=None) -> backend
EnvFactory = Callable[[str], Environment]
USER_ERRORS = (ValueError, TaskNotFound, StoreError, BackendError, ReplayMismatch, OSError)


@dataclass(frozen=True)
class ExploreJob:
    """One piece of explorer work. ``start``: new runs of ``tasks``; ``resume``: continue ``run_id``;
    ``rebranch``: a person's sibling of ``branch_id`` in ``run_id`` with ``summary``."""

    kind: Literal["start", "resume", "rebranch"]
    tasks: tuple[str, ...] = ()
    model: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    run_id: int | None = None
    branch_id: int | None = None
    summary: str = ""

    def describe(self) -> str:
        if self.kind == "start":
            return f"exploring {', '.join(self.tasks)}"
        if self.kind == "resume":
            return f"resuming run {self.run_id}"
        return f"re-branching #{self.branch_id} of run {self.run_id}"


class ExplorerUpdate(Message):
    """Something the explorer committed (a node, reflection, branch or run change)."""

    def __init__(self, event: ExplorerEvent) -> None:
        super().__init__()
        self.event = event


class WorkProgress(Message):
    """Where the work stands: a phrase and, once known, episodes used out of the budget."""

    def __init__(self, text: str, done: int | None = None, total: int | None = None) -> None:
        super().__init__()
        self.text, self.done, self.total = text, done, total


class WorkFinished(Message):
    """The job ended on its own or because it was stopped; ``run_ids`` are the runs it touched."""

    def __init__(self, job: ExploreJob, run_ids: list[int], stopped: bool) -> None:
        super().__init__()
        self.job, self.run_ids, self.stopped = job, run_ids, stopped


class WorkFailed(Message):
    """The job failed; ``error`` is one line for a notification."""

    def __init__(self, job: ExploreJob, error: str) -> None:
        super().__init__()
        self.job, self.error = job, error


@dataclass
class JobRunner:
    """Runs one job in the calling (worker) thread."""

    db_path: Path
    backend_factory: BackendFactory
    env_factory: EnvFactory
    post: Callable[[Message], Any]
    stop: threading.Event
    backends: dict[str, ModelBackend]  # loaded models, kept across jobs of one app

    def run(self, job: ExploreJob) -> None:
        run_ids: list[int] = []
        try:
            store = Store(self.db_path)
            try:
                self._run(job, store, run_ids)
            finally:
                store.close()
        except USER_ERRORS as exc:
            self.post(WorkFailed(job, str(exc) or type(exc).__name__))
            return
        except Exception as exc:  # noqa: BLE001 - a worker must end in a message, never a traceback
            self.post(WorkFailed(job, f"{type(exc).__name__}: {exc}"))
            return
        self.post(WorkFinished(job, run_ids, self.stop.is_set()))

    def _backend(self, model: str, adapter: str | None = None) -> ModelBackend:
        key = f"{model}+{adapter}" if adapter else model
        if key not in self.backends:
            self.post(WorkProgress(f"loading model {model}{' with its adapter' if adapter else ''}…"))
            self.backends[key] = (
                self.backend_factory(model, adapter=adapter) if adapter else self.backend_factory(model)
            )
        return self.backends[key]

    def _explorer(self, store: Store, task: str, config: dict[str, Any], model: str) -> Explorer:
        env = self.env_factory(task)
        backend = self._backend(model, config.get("adapter"))
        explore_config = ExploreConfig.from_dict(config)
        explore_config.validate()
        progress = _Progress(store, explore_config.budget, self.post)

        def on_event(event: ExplorerEvent) -> None:
            self.post(ExplorerUpdate(event))
            progress(event)

        return Explorer(store, backend, env, explore_config, on_event=on_event, stop=self.stop)

    def _run(self, job: ExploreJob, store: Store, run_ids: list[int]) -> None:
        if job.kind == "start":
            model = job.model or _default_model()
            for task in job.tasks:
                if self.stop.is_set():
                    return
                explorer = self._explorer(store, task, job.config, model)
                if self.stop.is_set():
                    return
                run_ids.append(explorer.start(task, model))
            return
        assert job.run_id is not None
        run = store.get_run(job.run_id)
        if Store.effective_status(run) == "running" and run.get("pid") != os.getpid():
            raise ValueError(f"run {job.run_id} is being explored by another process (pid {run['pid']})")
        explorer = self._explorer(store, run["task_id"], run["config"], job.model or run["model"])
        if self.stop.is_set():
            return
        run_ids.append(job.run_id)
        if job.kind == "resume":
            if run["status"] == "finished":
                raise ValueError(f"run {job.run_id} already finished; nothing to resume")
            explorer.resume(job.run_id)
        else:
            assert job.branch_id is not None
            explorer.rebranch(job.run_id, job.branch_id, job.summary)


class _Progress:
    """Posts episodes used / budget and the steps taken after everything the explorer commits."""

    def __init__(self, store: Store, budget: int, post: Callable[[Message], Any]) -> None:
        self.store, self.budget, self.post = store, budget, post
        self.steps = 0

    def __call__(self, event: ExplorerEvent) -> None:
        if event.kind == "node" and event.data.get("step", 0) > 0:
            self.steps += 1
        used = self.store.episodes_used(event.run_id)
        budget = max(self.budget, used)
        self.post(
            WorkProgress(f"run {event.run_id}: episode {used}/{budget}, {self.steps} steps", used, budget)
        )


def _default_model() -> str:
    from engine.models import DEFAULT_MODEL

    return DEFAULT_MODEL


def llama_backend_factory(n_ctx: int = 8192, cache: bool = True) -> BackendFactory:
    """Load llama.cpp models the way ``leafe explore`` does (same resolution, same options)."""

    def load(model: str, adapter: str | None = None) -> ModelBackend:
        import io

        from rich.console import Console

        from leafe_tui.explore_cmd import ExploreRequest, load_backend

        request = ExploreRequest(tasks=[], model=model, db=Path(), n_ctx=n_ctx, cache=cache, adapter=adapter)
        _, backend = load_backend(request, Console(file=io.StringIO()))
        return backend

    return load


def default_env_factory(tasks_file: Path | None = None) -> EnvFactory:
    def make(task: str) -> Environment:
        from engine.envs import env_for_task

        return env_for_task(task, tasks_file=tasks_file)

    return make
