"""Creating training jobs, running them in a worker process that outlives the TUI, cancelling them.

A background job is a separate ``python -m trainer.worker`` process in its own session, so closing
the terminal or the TUI does not stop it; its state lives in the job's row, its output in
``log.txt`` in the job's folder. Cancelling sets the row's flag and sends SIGTERM; the worker stops
at the next optimiser step after saving a checkpoint, so a cancelled job can still be resumed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from engine.models import DEFAULT_MODEL
from engine.store import Store
from trainer.dataset import dataset_model, read_dataset
from trainer.train import TrainConfig, TrainError, choose_method, job_dir

RESUMABLE = ("failed", "cancelled", "interrupted")


def resolve_dataset(store: Store, dataset: str) -> tuple[int | None, Path, list[dict[str, Any]]]:
    """A dataset id from the store or a JSONL path, and its examples (read now, so a missing or
    malformed file is an error before any job exists, not when the worker starts)."""
    if dataset.isdigit():
        row = store.dataset(int(dataset))
        path = Path(row["path"])
        dataset_id: int | None = row["id"]
    else:
        path = Path(dataset).expanduser().resolve()
        dataset_id = next(
            (d["id"] for d in store.datasets() if Path(d["path"]) == path),
            None,
        )
    return dataset_id, path, read_dataset(path)


def create_job(
    store: Store,
    dataset: str,
    base: str | None,
    method: str,
    config: TrainConfig,
    choose: Callable[[str], str] = choose_method,
) -> int:
    """A queued job; QLoRA without a GPU and a bad dataset are refused here, in one line.

    ``base`` defaults to the model the dataset's runs used. ``choose`` answers which method runs
    (the TUI asks in a child process to keep torch out of it).
    """
    dataset_id, path, records = resolve_dataset(store, dataset)
    base = base or dataset_model(records, DEFAULT_MODEL)
    chosen = choose(method)
    return store.create_job(
        dataset_id=dataset_id, dataset_path=str(path), base=base, method=chosen, config=asdict(config)
    )


def prepare_resume(store: Store, job_id: int) -> dict[str, Any]:
    """Make a stopped job runnable again (it continues from its last checkpoint)."""
    job = store.job(job_id)
    if job["effective_status"] not in RESUMABLE:
        raise TrainError(
            f"job {job_id} is {job['effective_status']}; only a failed, cancelled or interrupted job resumes"
        )
    store.update_job(job_id, status="queued", cancel_requested=0, error=None)
    return store.job(job_id)


def start_background(store: Store, job_id: int) -> int:
    """Start the worker process for a queued job and return its pid."""
    folder = job_dir(store, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    log = (folder / "log.txt").open("ab")
    db = str(store.path.resolve())  # the worker runs from the project folder, not the caller's
    command = [sys.executable, "-m", "trainer.worker", "--db", db, "--job", str(job_id)]
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # survives the terminal and the TUI closing
        cwd=Path(__file__).resolve().parent.parent,
    )
    log.close()
    store.update_job(job_id, pid=process.pid, out_dir=str(folder))
    return process.pid


def cancel(store: Store, job_id: int) -> dict[str, Any]:
    """Ask a job to stop: a queued job is cancelled at once, a running one at its next step."""
    job = store.request_cancel(job_id)
    if job["status"] == "running" and job.get("pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(job["pid"], signal.SIGTERM)
    return store.job(job_id)
