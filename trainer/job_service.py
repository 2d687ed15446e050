"""Starting a training job from the approved branches: the service behind the TUI's "new job".

``leafe train`` and the terminal app both come here (and to ``trainer.jobs``), so no screen holds
orchestration: build the dataset of every run's approved branches, create the job, start the
background worker. Nothing here imports torch; whether a GPU is there is asked of a child process.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trainer.dataset as datasets
import trainer.jobs as jobs
from engine.store import Store
from trainer.train import TrainConfig, TrainError, choose_method

REPO = Path(jobs.__file__).resolve().parent.parent

# choose_method("auto" / "qlora") imports torch to look for CUDA; the child answers in one line.
_PROBE = """\
import sys
from trainer.train import TrainError, choose_method
try:
    print(choose_method(sys.argv[1]))
except TrainError as exc:
    print(exc, file=sys.stderr)
    sys.exit(2)
"""


# --- the work behind "new job" (plain functions, run in a thread) ---------------------------------
def choose_method_isolated(requested: str) -> str:
    """``trainer.train.choose_method`` without loading torch here: ``lora`` (or a bad name) is answered
    at once; ``auto`` and ``qlora`` need to look for a CUDA GPU, which a child process does."""
    if requested not in ("auto", "qlora"):
        return choose_method(requested)
    try:
        child = subprocess.run(
            [sys.executable, "-c", _PROBE, requested],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=300,
            cwd=REPO,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TrainError(f"could not check for a GPU: {exc}") from None
    if child.returncode != 0:
        lines = child.stderr.strip().splitlines()
        line = lines[-1] if lines else f"exit status {child.returncode}"
        if "No module named" in line:
            line += " (training needs the train extra: pip install 'leafe[train]')"
        raise TrainError(line if child.returncode == 2 else f"could not check for a GPU: {line}")
    return child.stdout.strip().splitlines()[-1]


def next_dataset_path(store: Store) -> Path:
    """``<db folder>/<db stem>.datasets/dataset-<n>.jsonl``, n past every dataset and file there."""
    folder = store.path.parent / f"{store.path.stem}.datasets"
    number = len(store.datasets()) + 1
    while (folder / f"dataset-{number}.jsonl").exists():
        number += 1
    return folder / f"dataset-{number}.jsonl"


@dataclass(frozen=True)
class NewJob:
    """A job started from the approved branches."""

    job_id: int
    dataset_id: int
    counts: dict[str, Any]
    base: str
    pid: int

    def describe(self) -> str:
        counts = self.counts
        return (
            f"job {self.job_id} started in the background (pid {self.pid}) on {self.base}: dataset "
            f"{self.dataset_id}, {counts['examples']} examples ({counts['counterfactual']} counterfactual, "
            f"{counts['rehearsal']} rehearsal) from {counts['tasks']} task(s)"
        )


def new_job_from_approved(db_path: Path, *, base: str, method: str, config: TrainConfig) -> NewJob:
    """``leafe dataset build`` over every run's approved branches, then ``leafe train --background``.

    Runs in a worker thread with its own connection (SQLite connections belong to one thread). The
    method is checked first, so a QLoRA request on a machine without a GPU leaves no dataset behind.
    """
    method = choose_method_isolated(method)
    store = Store(db_path)
    try:
        out = next_dataset_path(store)
        settings = datasets.DatasetSettings(selection="approved")
        dataset_id, counts = datasets.build_dataset(store, settings, out)
        job_id = jobs.create_job(
            store, str(dataset_id), base or None, method, config, choose=lambda _: method
        )
        base = store.job(job_id)["base"]
        pid = jobs.start_background(store, job_id)
    finally:
        store.close()
    return NewJob(job_id, dataset_id, counts, base, pid)
