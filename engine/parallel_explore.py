"""Several tasks explored at once against one served model (``leafe explore --workers N``).

Each worker thread explores whole runs, one task after another, with a store connection and an
environment of its own (an environment is stateful; SQLite in WAL mode takes the writers one at a
time and they wait for each other, see ``engine.store``). The model is shared: a served backend
takes concurrent calls and the server batches them. A run is the unit of work, so a run's tree is
built exactly as a single worker would build it (its seeds depend on the run, never on timing), and a
killed worker leaves an interrupted run that ``--resume`` continues.

Branches of one run are not spread over workers: a LEAFE run queues one branch per reflection, so
there is rarely a second branch to run at once, and running them in parallel would let timing decide
which branch takes the budget's last episode.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from engine.backends.base import ModelBackend
from engine.explorer import ExploreConfig, Explorer
from engine.specs import EnvSpec, ModelSpec


@dataclass(frozen=True)
class ExploreJob:
    """One task to explore (a new run) or one run to resume."""

    task_id: str
    env_spec: EnvSpec
    resume_run: int | None = None


def explore_many(
    db_path: Path,
    backend: ModelBackend,
    jobs: list[ExploreJob],
    config: ExploreConfig,
    *,
    model_name: str,
    model_spec: ModelSpec | None,
    workers: int,
    on_run_done: Callable[[ExploreJob, int], None] | None = None,
    stop: threading.Event | None = None,
    reflector: ModelBackend | None = None,
    reflect_spec: ModelSpec | None = None,
) -> list[int]:
    """Explore ``jobs`` on ``workers`` threads; returns their run ids in the jobs' order.

    The first failure stops the other workers at their next step (their runs become "stopped",
    resumable) and is raised once they have all returned; so is KeyboardInterrupt.
    """
    from engine.registry import open_env
    from engine.store import Store

    stop = stop or threading.Event()
    done_lock = threading.Lock()

    def explore(job: ExploreJob) -> int | None:
        if stop.is_set():  # an earlier failure or ^C: nothing new starts
            return None
        store = Store(db_path, create=False)
        env = open_env(job.env_spec)
        try:
            explorer = Explorer(store, backend, env, config, stop=stop, reflector=reflector)
            if job.resume_run is not None:
                run_id = explorer.resume(job.resume_run)
            else:
                run_id = explorer.start(
                    job.task_id,
                    model_name,
                    model_spec=model_spec,
                    env_spec=job.env_spec,
                    reflect_spec=reflect_spec,
                )
        finally:
            env.close()
            store.close()
        if on_run_done is not None:
            with done_lock:
                on_run_done(job, run_id)
        return run_id

    results: dict[int, int] = {}
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leafe-explore")
    first_error: BaseException | None = None
    try:
        futures = {pool.submit(explore, job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                run_id = future.result()
                if run_id is not None:
                    results[futures[future]] = run_id
            except BaseException as exc:  # noqa: BLE001 - re-raised below, after the others stop
                first_error = first_error or exc
                stop.set()
    except BaseException:  # ^C in the waiting thread: the workers stop at their next step
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True, cancel_futures=True)
    if first_error is not None:
        raise first_error
    return [results[i] for i in sorted(results)]
