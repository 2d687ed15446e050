"""Evaluations as records: what was evaluated, and one row per sample (with its trajectory).

An evaluation is stored before its first rollout, and every sample is committed as soon as it ends,
so a killed evaluation resumes without repeating or losing a sample (``(evaluation, task, sample)``
is unique). Pass@k is computed from the rows, never kept beside them.

Tables (schema version 6)
- ``evaluations``: the model spec, the rollout settings, the tasks, n, the k values, status.
- ``eval_samples``: one rollout: task, sample index, success, steps, tokens, seconds, trajectory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import sqlite_utils

from engine.errors import NotFoundError
from engine.store_base import StoreError, now

EVAL_TABLES: dict[str, tuple[dict[str, type], dict[str, Any]]] = {
    "evaluations": (
        {
            "id": int,
            "model_spec": str,
            "config": str,
            "tasks": str,
            "n": int,
            "ks": str,
            "status": str,
            "label": str,
            "created_at": str,
            "updated_at": str,
        },
        {"pk": "id", "not_null": {"model_spec", "config", "tasks", "n", "ks", "status"}},
    ),
    "eval_samples": (
        {
            "id": int,
            "eval_id": int,
            "task_id": str,
            "sample": int,
            "success": bool,
            "steps": int,
            "generated_tokens": int,
            "seconds": float,
            "trajectory": str,
            "created_at": str,
        },
        {
            "pk": "id",
            "not_null": {"eval_id", "task_id", "sample", "success"},
            "foreign_keys": [("eval_id", "evaluations", "id")],
        },
    ),
}


def create_eval_tables(db: sqlite_utils.Database) -> None:
    """Schema version 6: stored evaluations (new files get them at once, older ones by migration)."""
    for name, (columns, options) in EVAL_TABLES.items():
        db[name].create(columns, if_not_exists=True, **options)
    db["eval_samples"].create_index(["eval_id", "task_id", "sample"], unique=True, if_not_exists=True)


class EvaluationNotFound(StoreError, NotFoundError):
    """An evaluation id that is not in the database."""


@dataclass(frozen=True)
class EvalSample:
    """One stored rollout."""

    task_id: str
    sample: int
    success: bool
    steps: int
    generated_tokens: int
    seconds: float
    trajectory: list[dict[str, str]]  # [{"reply": …, "observation": …}, …]


class EvalRecords:
    """The store's evaluation rows (mixed into ``engine.store.Store``)."""

    db: sqlite_utils.Database

    def create_evaluation(
        self,
        *,
        model_spec: str,
        config: dict[str, Any],
        tasks: list[str],
        n: int,
        ks: list[int],
        label: str = "",
    ) -> int:
        stamp = now()
        table = self.db["evaluations"]
        table.insert(
            {
                "model_spec": model_spec,
                "config": json.dumps(config, sort_keys=True),
                "tasks": json.dumps(tasks),
                "n": n,
                "ks": json.dumps(ks),
                "status": "running",
                "label": label,
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        return int(table.last_pk)

    def evaluation(self, eval_id: int) -> dict[str, Any]:
        try:
            return _decoded(self.db["evaluations"].get(eval_id))
        except sqlite_utils.db.NotFoundError:
            raise EvaluationNotFound(f"no evaluation {eval_id} in {self.path}") from None  # type: ignore[attr-defined]

    def evaluations(self) -> list[dict[str, Any]]:
        return [_decoded(row) for row in self.db["evaluations"].rows_where(order_by="id")]

    def set_evaluation_status(self, eval_id: int, status: str) -> None:
        self.db["evaluations"].update(eval_id, {"status": status, "updated_at": now()})

    def add_eval_sample(self, eval_id: int, sample: EvalSample) -> None:
        """Commit one rollout; a sample already stored (a resume racing another) is an error."""
        row = asdict(sample)
        row["trajectory"] = json.dumps(sample.trajectory, ensure_ascii=False)
        self.db["eval_samples"].insert({"eval_id": eval_id, **row, "created_at": now()})

    def eval_sample(self, eval_id: int, task_id: str, index: int) -> EvalSample:
        """One stored sample with its trajectory."""
        rows = self.db.query(
            "select * from eval_samples where eval_id = ? and task_id = ? and sample = ?",
            [eval_id, task_id, index],
        )
        for row in rows:
            return _sample(row)
        raise EvaluationNotFound(f"evaluation {eval_id} has no sample {index} of {task_id}")

    def eval_samples(self, eval_id: int, *, trajectories: bool = True) -> list[EvalSample]:
        """The samples of an evaluation; without ``trajectories`` (summaries) their text is not read."""
        columns = "task_id, sample, success, steps, generated_tokens, seconds" + (
            ", trajectory" if trajectories else ""
        )
        rows = self.db.query(
            f"select {columns} from eval_samples where eval_id = ? order by task_id, sample", [eval_id]
        )
        return [_sample(row) for row in rows]


def _sample(row: dict[str, Any]) -> EvalSample:
    return EvalSample(
        task_id=row["task_id"],
        sample=row["sample"],
        success=bool(row["success"]),
        steps=row["steps"] or 0,
        generated_tokens=row["generated_tokens"] or 0,
        seconds=row["seconds"] or 0.0,
        trajectory=json.loads(row.get("trajectory") or "[]"),
    )


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key in ("config", "tasks", "ks"):
        row[key] = json.loads(row[key])
    return row
