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

from engine.backends.base import ModelBackend
from engine.envs.base import Environment
from engine.errors import LeafeError
from engine.events import ExplorerEvent, NodeCommitted
from engine.explorer import ExploreConfig, Explorer
from engine.runtime import env_spec_for, run_env_spec, run_model_spec
from engine.specs import EnvSpec, ModelSpec
from engine.store import Store

BackendFactory = Callable[[ModelSpec], ModelBackend]  # engine.registry.open_backend, or a test double
EnvFactory = Callable[[EnvSpec], Environment]  # engine.registry.open_env, or a test double
USER_ERRORS = (LeafeError, OSError)


@dataclass(frozen=True)
class ExploreJob:
    """One piece of explorer work. ``start``: new runs of ``tasks``; ``resume``: continue ``run_id``;
    ``rebranch``: a person's sibling of ``branch_id`` in ``run_id`` with ``summary``."""

    kind: Literal["start", "resume", "rebranch"]
    tasks: tuple[str, ...] = ()
    model_spec: ModelSpec | None = None  # start: the model to load (resume, re-branch: the run's own)
    tasks_file: str | None = None  # start: the user's tasks file, for code/file tasks
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

    def _backend(self, spec: ModelSpec) -> ModelBackend:
        key = spec.to_json()
        if key not in self.backends:
            with_adapter = " with its adapter" if spec.adapter else ""
            self.post(WorkProgress(f"loading model {spec.model}{with_adapter}…"))
            self.backends[key] = self.backend_factory(spec)
        return self.backends[key]

    def _explorer(
        self,
        store: Store,
        env_spec: EnvSpec,
        config: dict[str, Any],
        spec: ModelSpec,
        reflect_spec: ModelSpec | None = None,
    ) -> Explorer:
        env = self.env_factory(env_spec)
        backend = self._backend(spec)
        reflector = self._backend(reflect_spec) if reflect_spec is not None else None
        explore_config = ExploreConfig.from_dict(config)
        explore_config.validate()
        progress = _Progress(store, explore_config.budget, self.post)

        def on_event(event: ExplorerEvent) -> None:
            self.post(ExplorerUpdate(event))
            progress(event)

        return Explorer(
            store, backend, env, explore_config, on_event=on_event, stop=self.stop, reflector=reflector
        )

    def _run(self, job: ExploreJob, store: Store, run_ids: list[int]) -> None:
        if job.kind == "start":
            spec = job.model_spec or ModelSpec(model=_default_model())
            config = {**job.config, "adapter": spec.adapter} if spec.adapter else job.config
            for task in job.tasks:
                if self.stop.is_set():
                    return
                tasks_file = Path(job.tasks_file) if job.tasks_file else None
                env_spec = env_spec_for(task, tasks_file, check_task=False)  # checked when the job was made
                explorer = self._explorer(store, env_spec, config, spec)
                if self.stop.is_set():
                    return
                run_ids.append(explorer.start(task, spec.model, model_spec=spec, env_spec=env_spec))
            return
        assert job.run_id is not None
        run = store.get_run(job.run_id)
        if Store.effective_status(run) == "running" and run.get("pid") != os.getpid():
            raise LeafeError(f"run {job.run_id} is being explored by another process (pid {run['pid']})")
        env_spec = run_env_spec(run, Path(job.tasks_file) if job.tasks_file else None)
        reflect_spec = ModelSpec.from_json(run.get("reflect_spec"))  # the run's own reflection model
        explorer = self._explorer(store, env_spec, run["config"], run_model_spec(run), reflect_spec)
        if self.stop.is_set():
            return
        run_ids.append(job.run_id)
        if job.kind == "resume":
            if run["status"] == "finished":
                raise LeafeError(f"run {job.run_id} already finished; nothing to resume")
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
        if isinstance(event, NodeCommitted) and event.node.step > 0:
            self.steps += 1
        used = self.store.episodes_used(event.run_id)
        budget = max(self.budget, used)
        self.post(
            WorkProgress(f"run {event.run_id}: episode {used}/{budget}, {self.steps} steps", used, budget)
        )


def _default_model() -> str:
    from engine.models import DEFAULT_MODEL

    return DEFAULT_MODEL


def default_backend_factory() -> BackendFactory:
    """Models are opened through the registry, exactly as the spec says."""
    from engine.registry import open_backend

    return open_backend


def default_env_factory(tasks_file: Path | None = None) -> EnvFactory:
    """Open environments through the registry; ``tasks_file`` fills in specs that lack one."""

    def make(spec: EnvSpec) -> Environment:
        from engine.registry import open_env

        if spec.tasks_file is None and tasks_file is not None and spec.name == "code":
            spec = EnvSpec(spec.name, str(tasks_file), spec.options)
        return open_env(spec)

    return make
