"""Ablations as records: which runs (or datasets, jobs, evaluations) an ablation made, so it resumes.

Tables (schema version 7)
- ``ablations``: kind (``explore`` or ``distill``), the tasks, the settings, the model spec, status,
  and ``state`` (what a multi-stage ablation has finished so far).
- ``ablation_runs``: one ordinary run per (ablation, strategy, task), linked as soon as it is made,
  so a killed ablation resumes that very run and never starts a second one for the same cell.
"""

from __future__ import annotations

import json
from typing import Any

import sqlite_utils

from engine.errors import NotFoundError
from engine.store_base import StoreError, now

ABLATION_TABLES: dict[str, tuple[dict[str, type], dict[str, Any]]] = {
    "ablations": (
        {
            "id": int,
            "kind": str,
            "model_spec": str,
            "settings": str,
            "tasks": str,
            "state": str,
            "status": str,
            "created_at": str,
            "updated_at": str,
        },
        {"pk": "id", "not_null": {"kind", "settings", "tasks", "status"}},
    ),
    "ablation_runs": (
        {"id": int, "ablation_id": int, "strategy": str, "task_id": str, "run_id": int},
        {
            "pk": "id",
            "not_null": {"ablation_id", "strategy", "task_id", "run_id"},
            "foreign_keys": [("ablation_id", "ablations", "id"), ("run_id", "runs", "id")],
        },
    ),
}


def create_ablation_tables(db: sqlite_utils.Database) -> None:
    """Schema version 7: stored ablations (new files get them at once, older ones by migration)."""
    for name, (columns, options) in ABLATION_TABLES.items():
        db[name].create(columns, if_not_exists=True, **options)
    db["ablation_runs"].create_index(["ablation_id", "strategy", "task_id"], unique=True, if_not_exists=True)


class AblationNotFound(StoreError, NotFoundError):
    """An ablation id that is not in the database."""


class AblationRecords:
    """The store's ablation rows (mixed into ``engine.store.Store``)."""

    db: sqlite_utils.Database

    def create_ablation(
        self, kind: str, *, settings: dict[str, Any], tasks: list[str], model_spec: str | None = None
    ) -> int:
        stamp = now()
        table = self.db["ablations"]
        table.insert(
            {
                "kind": kind,
                "model_spec": model_spec,
                "settings": json.dumps(settings, sort_keys=True),
                "tasks": json.dumps(tasks),
                "state": "{}",
                "status": "running",
                "created_at": stamp,
                "updated_at": stamp,
            }
        )
        return int(table.last_pk)

    def ablation(self, ablation_id: int) -> dict[str, Any]:
        try:
            return _decoded(self.db["ablations"].get(ablation_id))
        except sqlite_utils.db.NotFoundError:
            raise AblationNotFound(f"no ablation {ablation_id} in {self.path}") from None  # type: ignore[attr-defined]

    def ablations(self) -> list[dict[str, Any]]:
        return [_decoded(row) for row in self.db["ablations"].rows_where(order_by="id")]

    def set_ablation_status(self, ablation_id: int, status: str) -> None:
        self.db["ablations"].update(ablation_id, {"status": status, "updated_at": now()})

    def set_ablation_state(self, ablation_id: int, state: dict[str, Any]) -> None:
        self.db["ablations"].update(
            ablation_id, {"state": json.dumps(state, sort_keys=True), "updated_at": now()}
        )

    def link_ablation_run(self, ablation_id: int, strategy: str, task_id: str, run_id: int) -> None:
        self.db["ablation_runs"].insert(
            {"ablation_id": ablation_id, "strategy": strategy, "task_id": task_id, "run_id": run_id}
        )

    def ablation_runs(self, ablation_id: int) -> dict[tuple[str, str], int]:
        """(strategy, task) -> run id, for the cells the ablation has started."""
        rows = self.db["ablation_runs"].rows_where("ablation_id = ?", [ablation_id], order_by="id")
        return {(row["strategy"], row["task_id"]): row["run_id"] for row in rows}


def _decoded(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    for key in ("settings", "tasks", "state"):
        row[key] = json.loads(row[key] or "{}")
    return row
