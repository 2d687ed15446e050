"""The SQLite store: every run, node, branch and reflection, committed as soon as it exists.

One file, WAL mode (readers such as the TUI never block the explorer), foreign keys on, schema
version recorded in ``meta``. The explorer keeps no state that is not in here, which is what lets a
killed run resume without losing or duplicating a committed node.

Tables
- ``runs``: one Stage-1 exploration of one task (model, config, status, and the explorer process
  that owns it: pid, host and process start, so a pid reused by an unrelated process is not mistaken
  for the explorer).
- ``branches``: an episode. The root episode (kind ``root``), a rollback branch created by a
  reflection (kind ``rollback``: rollback step τ, experience summary as generated and as edited,
  review state) or a fresh restart from the task's start when the queue ran dry (kind ``restart``).
- ``nodes``: one environment step (step 0 is the reset observation, the root of the tree).
- ``reflections``: every reflection, including "no rollback" and unparsable ones.
- Stage 2 (datasets, training jobs, adapters): see ``engine/training_records.py``.
- Evaluations: ``engine/eval_records.py``; ablations: ``engine/ablation_records.py``.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlite_utils

from engine.ablation_records import AblationRecords, create_ablation_tables
from engine.errors import NotFoundError
from engine.eval_records import EvalRecords, create_eval_tables
from engine.store_base import StoreError, now
from engine.training_records import TrainingRecords, create_training_tables

# 2: branches.origin and .rebranch_of (re-branches by a person), summary_edits
# 3: the Stage-2 tables (datasets, dataset_examples, train_jobs, train_metrics, adapters)
# 4: runs.host and runs.pid_started (who owns a running run, beyond a pid that can be reused)
# 5: runs.model_spec, .env_spec, .prompts (how to reopen a run, and the prompt texts it saw)
# 6: evaluations and eval_samples (stored, resumable evaluations)
# 7: ablations and ablation_runs (stored, resumable ablations)
# 8: nodes.info (what the environment reported beyond the observation: score, progress, …)
# 9: runs.reflect_spec (a separate reflection model) and reflections.model (which model reflected)
SCHEMA_VERSION = 9
LOCK_WAIT_SECONDS = 30.0  # how long to wait for another process's write (schema creation, a claim)
REVIEW_STATES = ("pending", "approved", "rejected")


@dataclass(frozen=True)
class Node:
    id: int
    run_id: int
    branch_id: int
    parent_id: int | None
    step: int
    action: str | None
    raw_response: str | None
    thought: str | None
    valid: bool
    observation: str
    feedback: str
    reward: float
    done: bool
    success: bool
    prompt_tokens: int
    cached_tokens: int
    generated_tokens: int
    seconds: float
    created_at: str
    info: dict[str, Any] = field(default_factory=dict)  # what the environment reported beyond the text

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Node:
        values = {name: row.get(name) for name in cls.__dataclass_fields__}
        for flag in ("valid", "done", "success"):
            values[flag] = bool(values[flag])
        values["info"] = json.loads(values["info"]) if values["info"] else {}
        return cls(**values)


@dataclass(frozen=True)
class Branch:
    id: int
    run_id: int
    kind: str
    parent_branch_id: int | None
    reflection_id: int | None
    from_node_id: int
    depth: int
    rollback_step: int | None
    summary: str | None
    summary_edited: str | None
    summary_edited_at: str | None
    review: str
    status: str  # queued, running, done, skipped
    outcome: str | None  # success, failure; for skipped branches why they were skipped
    created_at: str
    ended_at: str | None
    origin: str = "explorer"  # explorer (root, restart, reflection) or person (a re-branch from the TUI)
    rebranch_of: int | None = None  # the sibling branch a person re-branched from

    @property
    def effective_summary(self) -> str | None:
        """The summary the agent is shown: the edited one when a person edited it."""
        return self.summary_edited or self.summary

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Branch:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


# What one model call cost; nodes (actions) and reflections both carry it.
_COST_COLUMNS: dict[str, type] = {
    "prompt_tokens": int,
    "cached_tokens": int,
    "generated_tokens": int,
    "seconds": float,
}

_TABLES: dict[str, tuple[dict[str, type], dict[str, Any]]] = {
    "runs": (
        {
            "id": int,
            "task_id": str,
            "env": str,
            "model": str,
            "backend": str,
            "config": str,
            "status": str,
            "error": str,
            "pid": int,
            "host": str,
            "pid_started": str,
            "model_spec": str,  # engine.specs.ModelSpec as JSON: how to reopen the model
            "env_spec": str,  # engine.specs.EnvSpec as JSON: how to reopen the environment
            "prompts": str,  # engine.prompts.PromptTexts as JSON: the prompt texts the model saw
            "reflect_spec": str,  # ModelSpec JSON of a separate reflection model (None: the actor)
            "created_at": str,
            "updated_at": str,
        },
        {"pk": "id", "not_null": {"task_id", "env", "model", "config", "status"}},
    ),
    "branches": (
        {
            "id": int,
            "run_id": int,
            "kind": str,
            "parent_branch_id": int,
            "reflection_id": int,
            "from_node_id": int,
            "depth": int,
            "rollback_step": int,
            "summary": str,
            "summary_edited": str,
            "summary_edited_at": str,
            "review": str,
            "status": str,
            "outcome": str,
            "created_at": str,
            "ended_at": str,
            "origin": str,
            "rebranch_of": int,
        },
        {
            "pk": "id",
            "not_null": {"run_id", "kind", "depth", "review", "status"},
            "foreign_keys": [("run_id", "runs", "id"), ("parent_branch_id", "branches", "id")],
        },
    ),
    "summary_edits": (
        {"id": int, "branch_id": int, "text": str, "created_at": str},
        {"pk": "id", "not_null": {"branch_id", "text"}, "foreign_keys": [("branch_id", "branches", "id")]},
    ),
    "nodes": (
        {
            "id": int,
            "run_id": int,
            "branch_id": int,
            "parent_id": int,
            "step": int,
            "action": str,
            "raw_response": str,
            "thought": str,
            "valid": int,
            "observation": str,
            "feedback": str,
            "reward": float,
            "done": int,
            "success": int,
            **_COST_COLUMNS,
            "created_at": str,
            "info": str,  # JSON
        },
        {
            "pk": "id",
            "not_null": {"run_id", "branch_id", "step", "observation"},
            "foreign_keys": [
                ("run_id", "runs", "id"),
                ("branch_id", "branches", "id"),
                ("parent_id", "nodes", "id"),
            ],
        },
    ),
    "reflections": (
        {
            "id": int,
            "run_id": int,
            "branch_id": int,
            "node_id": int,
            "trigger": str,
            "last_step": int,
            "raw_response": str,
            "rollback_step": int,
            "summary": str,
            "parse_error": str,
            "note": str,
            "model": str,  # the backend that wrote the reflection
            **_COST_COLUMNS,
            "created_at": str,
        },
        {
            "pk": "id",
            "not_null": {"run_id", "branch_id", "node_id", "trigger"},
            "foreign_keys": [
                ("run_id", "runs", "id"),
                ("branch_id", "branches", "id"),
                ("node_id", "nodes", "id"),
            ],
        },
    ),
}

_INDEXES = [
    ("nodes", ["run_id"]),
    ("nodes", ["branch_id"]),
    ("nodes", ["parent_id"]),
    ("branches", ["run_id"]),
    ("reflections", ["run_id"]),
    ("reflections", ["node_id"]),
]


def _migrate_to_2(db: sqlite_utils.Database) -> None:
    """Re-branches by a person (origin, rebranch_of) and the history of summary edits."""
    db["branches"].add_column("origin", str, not_null_default="explorer")
    db["branches"].add_column("rebranch_of", int)
    columns, options = _TABLES["summary_edits"]
    db["summary_edits"].create(columns, if_not_exists=True, **options)
    edited = "select id, summary_edited, summary_edited_at from branches where summary_edited is not null"
    for row in db.query(edited):
        db["summary_edits"].insert(
            {"branch_id": row["id"], "text": row["summary_edited"], "created_at": row["summary_edited_at"]}
        )


def _migrate_to_4(db: sqlite_utils.Database) -> None:
    """The owner of a run is a process on a host, not only a pid (pids are reused)."""
    for column in ("host", "pid_started"):
        if column not in db["runs"].columns_dict:
            db["runs"].add_column(column, str)


def _migrate_to_5(db: sqlite_utils.Database) -> None:
    """Runs record how to reopen their model and environment, and the prompt texts the model saw."""
    for column in ("model_spec", "env_spec", "prompts"):
        if column not in db["runs"].columns_dict:
            db["runs"].add_column(column, str)


def _migrate_to_8(db: sqlite_utils.Database) -> None:
    """Nodes keep what the environment reported beyond the observation (StepResult.info)."""
    if "info" not in db["nodes"].columns_dict:
        db["nodes"].add_column("info", str)


def _migrate_to_9(db: sqlite_utils.Database) -> None:
    """A run may reflect with a model of its own; each reflection names the model that wrote it."""
    if "reflect_spec" not in db["runs"].columns_dict:
        db["runs"].add_column("reflect_spec", str)
    if "model" not in db["reflections"].columns_dict:
        db["reflections"].add_column("model", str)


# Migration to version N, applied in order to files written by older versions.
_MIGRATIONS = {
    2: _migrate_to_2,
    3: create_training_tables,
    4: _migrate_to_4,
    5: _migrate_to_5,
    6: create_eval_tables,
    7: create_ablation_tables,
    8: _migrate_to_8,
    9: _migrate_to_9,
}
# Tables every leafe file has had since version 1: with ``meta`` they tell a leafe file from another.
_LEAFE_MARKERS = {"meta", "runs", "nodes", "branches"}


class BranchNotFound(StoreError, NotFoundError):
    """A branch id that is not in the database."""


class RunBusy(StoreError):
    """A run is being explored by another live process (or one on another host that leafe cannot check)."""


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (boot id and start tick from /proc), or None where that is unknown.

    Together with the pid and host this names one process: a pid that was reused after the explorer
    died belongs to a process with another start.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return f"{boot}:{fields[19]}"  # field 22 of proc_pid_stat(5): starttime


def this_process() -> dict[str, Any]:
    """The owner columns of a run explored by this process."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_started": process_started(os.getpid())}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def _owned_here(run: dict[str, Any]) -> bool:
    """Whether this very process is the run's recorded explorer."""
    me = this_process()
    return (
        run.get("pid") == me["pid"]
        and run.get("host") in (None, me["host"])
        and (run.get("pid_started") in (None, me["pid_started"]))
    )


def _owner(run: dict[str, Any]) -> str:
    where = f" on host {run['host']}" if run.get("host") and run["host"] != socket.gethostname() else ""
    return f"process {run['pid']}{where}"


def _is_locked(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorname", "") in ("SQLITE_BUSY", "SQLITE_LOCKED") or "locked" in str(exc)


def _explain(path: Path, exc: sqlite3.Error) -> StoreError:
    """A SQLite error on opening ``path`` in plain words: locked, not writable, or not a database."""
    name = getattr(exc, "sqlite_errorname", "")
    if _is_locked(exc):
        return StoreError(f"{path} stayed locked by another process for {LOCK_WAIT_SECONDS:.0f} s; try again")
    if name == "SQLITE_CANTOPEN":
        if not os.access(path.parent, os.W_OK):
            return StoreError(
                f"cannot open {path}: its folder {path.parent} is not writable (SQLite keeps its journal "
                "files next to the database); use a database in a writable folder"
            )
        return StoreError(f"cannot open {path} ({exc})")
    if name == "SQLITE_READONLY":
        return StoreError(f"{path} is read-only and its schema needs an upgrade; make it writable first")
    return StoreError(f"{path} is not a leafe database ({exc})")


class _RolledBack(Exception):
    """Ends a probe transaction (``Store.check_writable``) with a rollback."""


class Store(TrainingRecords, EvalRecords, AblationRecords):
    """Access to one leafe SQLite file (Stage-2 rows: :class:`TrainingRecords`)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        """Open (or, with ``create``, create) a leafe database.

        Never modifies a file that is not a leafe database already, unless it is new and empty; the
        schema is created or migrated under SQLite's write lock, so processes opening a new file at
        once wait for each other instead of failing.
        """
        self.path = Path(path).expanduser()
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a folder, not a database file")
        if not self.path.exists():
            if not create:
                raise StoreError(f"no database at {self.path}")
            self._make_folder()
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=LOCK_WAIT_SECONDS)
        except sqlite3.Error as exc:
            raise _explain(self.path, exc) from exc
        self.db = sqlite_utils.Database(conn)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise _explain(self.path, exc) from exc
        except StoreError:
            conn.close()
            raise

    def _make_folder(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of {self.path} ({exc.strerror})") from None

    # --- schema ----------------------------------------------------------------------------
    def _open(self) -> None:
        tables = self._tables()
        if tables and not tables >= _LEAFE_MARKERS:
            shown = ", ".join(sorted(tables)[:5]) + (", …" if len(tables) > 5 else "")
            raise StoreError(
                f"{self.path} is not a leafe database (it holds other tables: {shown}); "
                "leafe leaves it alone: use a new file or a leafe database"
            )
        self._enable_wal()
        self.db.execute("PRAGMA foreign_keys = ON")
        if not tables or self._schema_version() != SCHEMA_VERSION:
            with self._write_lock():
                self._migrate()

    def _tables(self) -> set[str]:
        rows = self.db.execute("select name from sqlite_master where type = 'table'").fetchall()
        return {name for (name,) in rows if not name.startswith("sqlite_")}

    def _schema_version(self) -> int:
        if "meta" not in self._tables():
            return 0
        row = self.db.execute("select value from meta where key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    def _enable_wal(self) -> None:
        """WAL mode, retried while another process holds the lock (the pragma does not wait by itself).

        A read-only file stays in the mode it has: reading works either way.
        """
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                self.db.enable_wal()
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorname", "") == "SQLITE_READONLY":
                    return
                if not _is_locked(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """One write transaction that holds SQLite's write lock from its start (BEGIN IMMEDIATE).

        What it reads cannot change under it, so a check and the write that follows are atomic
        across processes; waiting for another writer uses the connection's busy timeout. (A deferred
        BEGIN that reads first cannot wait: SQLite answers "database is locked" at once when its
        read snapshot must become a write while another connection writes, as with --workers.)
        Nested inside a transaction it is a savepoint of that transaction.
        """
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield
            return
        self.db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.execute("ROLLBACK")
            raise
        self.db.conn.execute("COMMIT")

    def _migrate(self) -> None:
        """Create the schema of a new file, or bring an older one up to date (under the write lock)."""
        tables = self._tables()
        if tables and not tables >= _LEAFE_MARKERS:  # something else was written meanwhile
            raise StoreError(f"{self.path} is not a leafe database")
        version = self._schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this leafe ({SCHEMA_VERSION}): upgrade"
            )
        if version == SCHEMA_VERSION:  # another process did it while this one waited for the lock
            return
        if version == 0:  # a new file: the current schema at once
            self.db["meta"].create({"key": str, "value": str}, pk="key", if_not_exists=True)
            for name, (columns, options) in _TABLES.items():
                self.db[name].create(columns, if_not_exists=True, **options)
            for table, cols in _INDEXES:
                self.db[table].create_index(cols, if_not_exists=True)
            create_training_tables(self.db)
            create_eval_tables(self.db)
            create_ablation_tables(self.db)
        else:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                _MIGRATIONS[step](self.db)
        self.db["meta"].upsert({"key": "schema_version", "value": str(SCHEMA_VERSION)}, pk="key")

    def check_writable(self) -> None:
        """Raise StoreError unless this process can write to the database (before any slow work).

        A real write attempt, rolled back: file permissions, an immutable file or a read-only mount
        all show up here, as SQLite sees them.
        """
        try:
            with self._write_lock():
                self.db.conn.execute("update meta set value = value where key = 'schema_version'")
                raise _RolledBack
        except _RolledBack:
            return
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise _explain(self.path, exc) from None
            raise StoreError(f"cannot write to {self.path}: the database is read-only ({exc})") from None

    def close(self) -> None:
        self.db.close()

    # --- runs ------------------------------------------------------------------------------
    def create_run(
        self,
        task_id: str,
        env: str,
        model: str,
        backend: str,
        config: dict[str, Any],
        first_observation: str,
        *,
        model_spec: str | None = None,
        env_spec: str | None = None,
        prompts: str | None = None,
        reflect_spec: str | None = None,
    ) -> tuple[int, Node]:
        """A new run with its root episode and root node (step 0, the first observation), atomically.

        ``model_spec``, ``env_spec`` and ``prompts`` are the JSON of the run's ModelSpec, EnvSpec and
        PromptTexts: what resume, re-branch, datasets and evaluations rebuild the run's setting from.
        """
        stamp = now()
        with self._write_lock():
            runs = self.db["runs"]
            runs.insert(
                {
                    "task_id": task_id,
                    "env": env,
                    "model": model,
                    "backend": backend,
                    "config": json.dumps(config, sort_keys=True),
                    "status": "running",
                    "error": None,
                    "model_spec": model_spec,
                    "env_spec": env_spec,
                    "prompts": prompts,
                    "reflect_spec": reflect_spec,
                    **this_process(),
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            )
            run_id = int(runs.last_pk)
            # The root node belongs to the root branch and the branch starts at that node.
            branch = self.add_branch(run_id, "root", from_node_id=0, depth=0, status="running")
            root = self.add_node(
                run_id=run_id, branch_id=branch.id, step=0, observation=first_observation, valid=True
            )
            self.db["branches"].update(branch.id, {"from_node_id": root.id})
        return run_id, root

    def get_run(self, run_id: int) -> dict[str, Any]:
        try:
            row = self.db["runs"].get(run_id)
        except sqlite_utils.db.NotFoundError:
            raise StoreError(f"no run {run_id} in {self.path}") from None
        row["config"] = json.loads(row["config"])
        return row

    def set_run_status(self, run_id: int, status: str, error: str | None = None) -> None:
        self.db["runs"].update(
            run_id, {"status": status, "error": error, "updated_at": now(), **this_process()}
        )

    def claim_run(self, run_id: int, *, force: bool = False, finished_ok: bool = False) -> dict[str, Any]:
        """Make this process the run's explorer (status running), atomically; returns the run as it was.

        Raises RunBusy when another live process explores it, so two resumes of one run cannot both
        go on; ``force`` takes it anyway (for an owner leafe cannot check, e.g. on another host).
        Claiming a run this process already owns is fine.
        """
        with self._write_lock():
            run = self.get_run(run_id)
            if run["status"] == "finished" and not finished_ok:  # checked under the lock: two resumes
                raise StoreError(f"run {run_id} already finished; nothing to resume")
            if not force and self.effective_status(run) == "running" and not _owned_here(run):
                raise RunBusy(f"run {run_id} is still being explored by {_owner(run)}")
            self.db["runs"].update(
                run_id, {"status": "running", "error": None, "updated_at": now(), **this_process()}
            )
        return run

    def set_run_config(self, run_id: int, config: dict[str, Any]) -> None:
        self.db["runs"].update(run_id, {"config": json.dumps(config, sort_keys=True), "updated_at": now()})

    def list_runs(self) -> list[dict[str, Any]]:
        rows = list(
            self.db.query(
                """
                select r.*,
                  (select count(*) from nodes n where n.run_id = r.id and n.step > 0) as steps,
                  (select count(*) from branches b where b.run_id = r.id and b.status in ('running', 'done'))
                     as episodes,
                  (select count(*) from branches b where b.run_id = r.id and b.kind = 'rollback')
                     as rollbacks,
                  (select count(*) from branches b where b.run_id = r.id and b.outcome = 'success')
                     as successes
                from runs r order by r.id
                """
            )
        )
        for row in rows:
            row["config"] = json.loads(row["config"])
            row["status"] = self.effective_status(row)
        return rows

    @staticmethod
    def effective_status(run: dict[str, Any]) -> str:
        """A run marked running whose explorer process is gone was interrupted (killed).

        The explorer is gone when its pid is not alive, or when the pid now belongs to a process
        that started at another time (the pid was reused). A run owned by another host cannot be
        checked from here and counts as running.
        """
        if run["status"] != "running" or not run.get("pid"):
            return run["status"]
        if run.get("host") and run["host"] != socket.gethostname():
            return "running"
        if not _pid_alive(int(run["pid"])):
            return "interrupted"
        recorded, actual = run.get("pid_started"), process_started(int(run["pid"]))
        if recorded and actual and recorded != actual:
            return "interrupted"
        return "running"

    # --- branches ---------------------------------------------------------------------------
    def add_branch(
        self,
        run_id: int,
        kind: str,
        from_node_id: int,
        depth: int,
        *,
        parent_branch_id: int | None = None,
        reflection_id: int | None = None,
        rollback_step: int | None = None,
        summary: str | None = None,
        status: str = "queued",
        origin: str = "explorer",
        rebranch_of: int | None = None,
    ) -> Branch:
        table = self.db["branches"]
        table.insert(
            {
                "run_id": run_id,
                "kind": kind,
                "parent_branch_id": parent_branch_id,
                "reflection_id": reflection_id,
                "from_node_id": from_node_id,
                "depth": depth,
                "rollback_step": rollback_step,
                "summary": summary,
                "summary_edited": None,
                "summary_edited_at": None,
                "review": "pending",
                "status": status,
                "outcome": None,
                "created_at": now(),
                "ended_at": None,
                "origin": origin,
                "rebranch_of": rebranch_of,
            }
        )
        return self.branch(int(table.last_pk))

    def branch(self, branch_id: int) -> Branch:
        try:
            return Branch.from_row(self.db["branches"].get(branch_id))
        except sqlite_utils.db.NotFoundError:
            raise BranchNotFound(f"no branch {branch_id} in {self.path}") from None

    def branches(self, run_id: int) -> list[Branch]:
        rows = self.db["branches"].rows_where("run_id = ?", [run_id], order_by="id")
        return [Branch.from_row(r) for r in rows]

    def set_branch_status(self, branch_id: int, status: str, outcome: str | None = None) -> None:
        values: dict[str, Any] = {"status": status}
        if status in ("done", "skipped"):
            values["ended_at"] = now()
            values["outcome"] = outcome
        self.db["branches"].update(branch_id, values)

    def next_branch(self, run_id: int) -> Branch | None:
        """The branch the explorer works on next: one left running by a killed run, else the oldest queued."""
        for status in ("running", "queued"):
            row = next(
                self.db["branches"].rows_where(
                    "run_id = ? and status = ?", [run_id, status], order_by="id", limit=1
                ),
                None,
            )
            if row:
                return Branch.from_row(row)
        return None

    def episodes_used(self, run_id: int) -> int:
        return self.db["branches"].count_where("run_id = ? and status in ('running', 'done')", [run_id])

    def steps_used(self, run_id: int) -> int:
        """Environment steps the run has taken (its nodes past the first observation)."""
        return self.db["nodes"].count_where("run_id = ? and step > 0", [run_id])

    def branch_chain(self, branch: Branch) -> list[Branch]:
        """The branch and its ancestors, oldest first."""
        chain = [branch]
        while chain[-1].parent_branch_id is not None:
            chain.append(self.branch(chain[-1].parent_branch_id))
        return chain[::-1]

    def set_review(self, branch_id: int, review: str) -> None:
        if review not in REVIEW_STATES:
            raise StoreError(f"review must be one of {', '.join(REVIEW_STATES)}, not {review!r}")
        self.db["branches"].update(branch_id, {"review": review})

    def edit_summary(self, branch_id: int, text: str) -> None:
        """Record a person's edit: the generated summary stays, every edit is kept with its time."""
        stamp = now()
        with self._write_lock():
            self.db["summary_edits"].insert({"branch_id": branch_id, "text": text, "created_at": stamp})
            self.db["branches"].update(branch_id, {"summary_edited": text, "summary_edited_at": stamp})

    def summary_edits(self, branch_id: int) -> list[dict[str, Any]]:
        return list(self.db["summary_edits"].rows_where("branch_id = ?", [branch_id], order_by="id"))

    # --- nodes -----------------------------------------------------------------------------
    def add_node(self, **values: Any) -> Node:
        values.setdefault("created_at", now())
        for flag in ("valid", "done", "success"):
            values[flag] = int(bool(values.get(flag, False)))
        for count in ("prompt_tokens", "cached_tokens", "generated_tokens"):
            values.setdefault(count, 0)
        values.setdefault("seconds", 0.0)
        values.setdefault("reward", 0.0)
        values.setdefault("feedback", "")
        for optional in ("parent_id", "action", "raw_response", "thought"):
            values.setdefault(optional, None)
        info = values.pop("info", None)
        values["info"] = json.dumps(info, ensure_ascii=False, default=str) if info else None
        table = self.db["nodes"]
        table.insert(values)
        return self.node(int(table.last_pk))

    def node(self, node_id: int) -> Node:
        return Node.from_row(self.db["nodes"].get(node_id))

    def nodes(self, run_id: int) -> list[Node]:
        return [Node.from_row(r) for r in self.db["nodes"].rows_where("run_id = ?", [run_id], order_by="id")]

    def branch_nodes(self, branch_id: int) -> list[Node]:
        rows = self.db["nodes"].rows_where("branch_id = ?", [branch_id], order_by="step")
        return [Node.from_row(r) for r in rows]

    def path_to(self, node_id: int) -> list[Node]:
        """Nodes from the root (step 0) down to ``node_id``, inclusive."""
        rows = self.db.query(
            """
            with recursive path(id, parent_id) as (
              select id, parent_id from nodes where id = ?
              union all
              select n.id, n.parent_id from nodes n join path p on n.id = p.parent_id
            )
            select nodes.* from nodes join path using (id) order by nodes.step
            """,
            [node_id],
        )
        return [Node.from_row(r) for r in rows]

    def root_node(self, run_id: int) -> Node | None:
        row = next(self.db["nodes"].rows_where("run_id = ? and step = 0", [run_id], limit=1), None)
        return Node.from_row(row) if row else None

    # --- reflections -----------------------------------------------------------------------
    def add_reflection(self, **values: Any) -> int:
        values.setdefault("created_at", now())
        table = self.db["reflections"]
        table.insert(values)
        return int(table.last_pk)

    def reflection_for(self, node_id: int) -> dict[str, Any] | None:
        return next(self.db["reflections"].rows_where("node_id = ?", [node_id], limit=1), None)

    def reflections(self, run_id: int) -> list[dict[str, Any]]:
        return list(self.db["reflections"].rows_where("run_id = ?", [run_id], order_by="id"))

    # --- summaries -------------------------------------------------------------------------
    def run_totals(self, run_id: int) -> dict[str, Any]:
        """Token, time and step totals of a run, actions and reflections together."""
        totals: dict[str, Any] = {}
        for table in ("nodes", "reflections"):
            row = next(
                self.db.query(
                    f"""select count(*) as calls, coalesce(sum(prompt_tokens), 0) as prompt_tokens,
                        coalesce(sum(cached_tokens), 0) as cached_tokens,
                        coalesce(sum(generated_tokens), 0) as generated_tokens,
                        coalesce(sum(seconds), 0) as seconds
                        from {table} where run_id = ? {"and step > 0" if table == "nodes" else ""}""",
                    [run_id],
                )
            )
            for key, value in row.items():
                totals[key] = totals.get(key, 0) + value
        totals["steps"] = self.steps_used(run_id)
        totals["episodes"] = self.episodes_used(run_id)
        totals["successes"] = self.db["branches"].count_where("run_id = ? and outcome = 'success'", [run_id])
        totals["evaluated_tokens"] = totals["prompt_tokens"] - totals["cached_tokens"]
        return totals

    def tree(self, run_id: int) -> dict[str, Any]:
        """One run as plain data: the run, its nodes, its branches (with their reflections) and totals."""
        run = self.get_run(run_id)
        run["status"] = self.effective_status(run)
        reflections = {r["id"]: r for r in self.reflections(run_id)}
        branches = []
        for branch in self.branches(run_id):
            item = dict(branch.__dict__)
            item["reflection"] = reflections.get(branch.reflection_id) if branch.reflection_id else None
            branches.append(item)
        return {
            "run": run,
            "nodes": [dict(n.__dict__) for n in self.nodes(run_id)],
            "branches": branches,
            "reflections": list(reflections.values()),
            "totals": self.run_totals(run_id),
        }
