"""Stage-2 rows of the store: datasets and their examples' lineage, training jobs, metrics, adapters.

Kept apart from the Stage-1 tables in ``store.py`` but in the same SQLite file, so an adapter can be
traced back through its job and dataset to the very nodes its examples came from. Nothing here
imports torch: the TUI and the CLI read these rows without loading the trainer.

Tables
- ``datasets``: one built dataset file (JSONL) with the settings it was built with and its counts.
- ``dataset_examples``: one line of that file, its kind (``reh`` rehearsal, ``cf`` counterfactual)
  and lineage: the run, branch, the nodes whose replies are trained and the nodes of its context.
- ``train_jobs``: one training job: settings, state, progress (step, loss, tokens/s, ETA), worker
  pid, whether a cancel was asked for, error.
- ``train_metrics``: the loss curve: one row per optimiser step (``train``) or evaluation (``eval``).
- ``adapters``: a trained adapter: its PEFT folder, its GGUF LoRA, the job and dataset it came from,
  and the parity of llama.cpp+adapter against transformers+adapter.
"""

from __future__ import annotations

import json
import os
from typing import Any

import sqlite_utils

from engine.errors import SettingError
from engine.store_base import StoreError, now

JOB_STATES = ("queued", "running", "done", "failed", "cancelled")

TRAINING_TABLES: dict[str, tuple[dict[str, type], dict[str, Any]]] = {
    "datasets": (
        {
            "id": int,
            "path": str,
            "settings": str,
            "counts": str,
            "created_at": str,
        },
        {"pk": "id", "not_null": {"path", "settings", "counts"}},
    ),
    "dataset_examples": (
        {
            "id": int,
            "dataset_id": int,
            "line": int,
            "kind": str,
            "task_id": str,
            "run_id": int,
            "branch_id": int,
            "trained_node_ids": str,
            "context_node_ids": str,
        },
        {
            "pk": "id",
            "not_null": {"dataset_id", "line", "kind", "run_id"},
            "foreign_keys": [("dataset_id", "datasets", "id"), ("run_id", "runs", "id")],
        },
    ),
    "train_jobs": (
        {
            "id": int,
            "dataset_id": int,
            "dataset_path": str,
            "base": str,
            "method": str,
            "config": str,
            "status": str,
            "phase": str,
            "pid": int,
            "cancel_requested": int,
            "step": int,
            "total_steps": int,
            "epoch": float,
            "train_loss": float,
            "eval_loss": float,
            "tokens_per_s": float,
            "eta_s": float,
            "out_dir": str,
            "note": str,
            "error": str,
            "created_at": str,
            "started_at": str,
            "updated_at": str,
            "ended_at": str,
        },
        {"pk": "id", "not_null": {"dataset_path", "base", "method", "config", "status"}},
    ),
    "train_metrics": (
        {
            "id": int,
            "job_id": int,
            "kind": str,
            "step": int,
            "epoch": float,
            "loss": float,
            "tokens": int,
            "tokens_per_s": float,
            "lr": float,
            "created_at": str,
        },
        {
            "pk": "id",
            "not_null": {"job_id", "kind", "step", "loss"},
            "foreign_keys": [("job_id", "train_jobs", "id")],
        },
    ),
    "adapters": (
        {
            "id": int,
            "job_id": int,
            "dataset_id": int,
            "base": str,
            "base_gguf": str,
            "peft_dir": str,
            "gguf_path": str,
            "rank": int,
            "alpha": float,
            "parity": float,
            "parity_base": float,
            "parity_positions": int,
            "parity_effect": float,
            "created_at": str,
        },
        {
            "pk": "id",
            "not_null": {"job_id", "base", "peft_dir"},
            "foreign_keys": [("job_id", "train_jobs", "id")],
        },
    ),
}

TRAINING_INDEXES = [
    ("dataset_examples", ["dataset_id"]),
    ("train_metrics", ["job_id"]),
    ("adapters", ["job_id"]),
]


def create_training_tables(db: sqlite_utils.Database) -> None:
    """Schema version 3: the Stage-2 tables (new files get them at once, older ones by migration)."""
    for name, (columns, options) in TRAINING_TABLES.items():
        db[name].create(columns, if_not_exists=True, **options)
    for table, cols in TRAINING_INDEXES:
        db[table].create_index(cols, if_not_exists=True)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TrainingRecords:
    """The Stage-2 part of :class:`engine.store.Store` (a mixin: it uses the store's ``db``)."""

    db: sqlite_utils.Database

    # --- datasets --------------------------------------------------------------------------
    def add_dataset(
        self, path: str, settings: dict[str, Any], counts: dict[str, Any], examples: list[dict[str, Any]]
    ) -> int:
        """Record a dataset file and the lineage of each of its lines, atomically."""
        with self._write_lock():  # type: ignore[attr-defined]
            table = self.db["datasets"]
            table.insert(
                {
                    "path": path,
                    "settings": json.dumps(settings, sort_keys=True),
                    "counts": json.dumps(counts, sort_keys=True),
                    "created_at": now(),
                }
            )
            dataset_id = int(table.last_pk)
            self.db["dataset_examples"].insert_all(
                {
                    "dataset_id": dataset_id,
                    "line": line,
                    "kind": ex["kind"],
                    "task_id": ex["task_id"],
                    "run_id": ex["run_id"],
                    "branch_id": ex.get("branch_id"),
                    "trained_node_ids": json.dumps(ex["trained_node_ids"]),
                    "context_node_ids": json.dumps(ex["context_node_ids"]),
                }
                for line, ex in enumerate(examples)
            )
        return dataset_id

    def dataset(self, dataset_id: int) -> dict[str, Any]:
        try:
            row = self.db["datasets"].get(dataset_id)
        except sqlite_utils.db.NotFoundError:
            raise StoreError(f"no dataset {dataset_id}: `leafe dataset list` shows them") from None
        return _decode(row, "settings", "counts")

    def datasets(self) -> list[dict[str, Any]]:
        return [_decode(row, "settings", "counts") for row in self.db["datasets"].rows_where(order_by="id")]

    def dataset_examples(self, dataset_id: int) -> list[dict[str, Any]]:
        rows = self.db["dataset_examples"].rows_where("dataset_id = ?", [dataset_id], order_by="line")
        return [_decode(row, "trained_node_ids", "context_node_ids") for row in rows]

    # --- jobs ------------------------------------------------------------------------------
    def create_job(
        self, *, dataset_id: int | None, dataset_path: str, base: str, method: str, config: dict[str, Any]
    ) -> int:
        stamp = now()
        table = self.db["train_jobs"]
        table.insert(
            {
                "dataset_id": dataset_id,
                "dataset_path": dataset_path,
                "base": base,
                "method": method,
                "config": json.dumps(config, sort_keys=True),
                "status": "queued",
                "cancel_requested": 0,
                "step": 0,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        return int(table.last_pk)

    def job(self, job_id: int) -> dict[str, Any]:
        try:
            row = self.db["train_jobs"].get(job_id)
        except sqlite_utils.db.NotFoundError:
            raise StoreError(f"no training job {job_id}: `leafe jobs` lists them") from None
        row = _decode(row, "config")
        row["effective_status"] = self.effective_job_status(row)
        return row

    def jobs(self) -> list[dict[str, Any]]:
        rows = [_decode(row, "config") for row in self.db["train_jobs"].rows_where(order_by="id")]
        for row in rows:
            row["effective_status"] = self.effective_job_status(row)
        return rows

    @staticmethod
    def effective_job_status(job: dict[str, Any]) -> str:
        """``running`` with a dead worker (or ``queued`` with a worker that died before starting) reads
        ``interrupted``: resumable with ``leafe train --resume``."""
        if job["status"] == "running" and not _pid_alive(job.get("pid")):
            return "interrupted"
        if job["status"] == "queued" and job.get("pid") and not _pid_alive(job["pid"]):
            return "interrupted"
        return job["status"]

    def update_job(self, job_id: int, **values: Any) -> None:
        if "status" in values and values["status"] not in JOB_STATES:
            raise SettingError(f"job status must be one of {JOB_STATES}")
        values["updated_at"] = now()
        if values.get("status") in ("done", "failed", "cancelled"):
            values.setdefault("ended_at", values["updated_at"])
        self.db["train_jobs"].update(job_id, values)

    def request_cancel(self, job_id: int) -> dict[str, Any]:
        """Ask a job to stop; a queued job (or one whose worker is gone) is cancelled at once."""
        job = self.job(job_id)
        if job["status"] in ("done", "failed", "cancelled"):
            return job
        if job["status"] == "queued" or job["effective_status"] == "interrupted":
            self.update_job(job_id, status="cancelled", cancel_requested=1)
        else:
            self.update_job(job_id, cancel_requested=1)
        return self.job(job_id)

    def cancel_requested(self, job_id: int) -> bool:
        row = next(self.db.query("select cancel_requested from train_jobs where id = ?", [job_id]))
        return bool(row["cancel_requested"])

    def add_metric(self, job_id: int, kind: str, step: int, loss: float, **values: Any) -> None:
        self.db["train_metrics"].insert(
            {"job_id": job_id, "kind": kind, "step": step, "loss": loss, "created_at": now(), **values}
        )

    def metrics(self, job_id: int, kind: str | None = None, after_id: int = 0) -> list[dict[str, Any]]:
        where, args = "job_id = ? and id > ?", [job_id, after_id]
        if kind:
            where += " and kind = ?"
            args.append(kind)
        return list(self.db["train_metrics"].rows_where(where, args, order_by="id"))

    def drop_metrics_after(self, job_id: int, step: int) -> None:
        """Forget metrics past a checkpoint's step, so a resumed job's curve has no duplicates."""
        self.db.execute("delete from train_metrics where job_id = ? and step > ?", [job_id, step])

    # --- adapters --------------------------------------------------------------------------
    def add_adapter(self, **values: Any) -> int:
        table = self.db["adapters"]
        table.insert({"created_at": now(), **values})
        return int(table.last_pk)

    def adapter(self, adapter_id: int) -> dict[str, Any]:
        try:
            return self.db["adapters"].get(adapter_id)
        except sqlite_utils.db.NotFoundError:
            raise StoreError(f"no adapter {adapter_id}: `leafe adapters` lists them") from None

    def adapters(self) -> list[dict[str, Any]]:
        return list(self.db["adapters"].rows_where(order_by="id"))

    def update_adapter(self, adapter_id: int, **values: Any) -> None:
        self.db["adapters"].update(adapter_id, values)


def _decode(row: dict[str, Any], *fields: str) -> dict[str, Any]:
    row = dict(row)
    for field in fields:
        if row.get(field) is not None:
            row[field] = json.loads(row[field])
    return row
