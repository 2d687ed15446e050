"""Stage-2 data from rollback trees: the rehearsal set and the counterfactual set (LEAFE.md).

- Rehearsal (``reh``): successful trajectories, every valid reply trained, a fraction per task.
- Counterfactual (``cf``): for each branch point (τ, e) whose corrected reply a′_τ lies on a
  successful trajectory, the *original* history h_τ followed by a′_τ (option: the whole corrected
  suffix). This is the distillation: the model learns the recovery without being told e.

No experience summary ever appears in a context: every conversation is rebuilt from the stored
nodes with the engine's own prompt builder and no guidance, so the prompts are exactly what the
trained model will see when it acts alone. Only branches a person approved enter (or, with
``successful``, every successful one a person did not reject); each example keeps its lineage.

The file is chat ``messages`` JSONL: every message has ``training`` (true on the assistant turns
whose tokens carry the loss), the form TRL/axolotl-style tools read per-message masks from.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.envs import load_env
from engine.errors import LeafeError
from engine.prompts import PromptTexts, Turn, trajectory_messages
from engine.run_tree import RunTree
from engine.store import Branch, Node, Store

SELECTIONS = ("approved", "successful")

ActionHelp = Callable[[str], str]  # environment name -> the action help its prompts carry


def env_action_help(env_name: str) -> str:
    return load_env(env_name).action_help


class DatasetError(LeafeError, ValueError):
    """Nothing to build from, or a setting out of range; one-line message."""


@dataclass(frozen=True)
class DatasetSettings:
    selection: str = "approved"  # approved: branches a person approved; successful: all not rejected
    runs: tuple[int, ...] = ()  # empty: every run in the database
    rehearsal_fraction: float = 0.2
    cf_per_task: int = 3
    cf_suffix: bool = False
    seed: int = 0
    limit: int = 0  # the data budget: at most this many examples, kinds in proportion (0: all)

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise DatasetError(f"selection must be one of {', '.join(SELECTIONS)}")
        if not 0.0 <= self.rehearsal_fraction <= 1.0:
            raise DatasetError("--rehearsal-fraction must be between 0 and 1")
        if self.cf_per_task < 0:
            raise DatasetError("--cf-per-task must be 0 or more")
        if self.limit < 0:
            raise DatasetError("the example limit must be 0 (no limit) or more")


@dataclass
class Example:
    kind: str  # reh or cf
    task_id: str
    run_id: int
    branch_id: int | None
    model: str
    messages: list[dict[str, Any]]
    trained_node_ids: list[int]
    context_node_ids: list[int]

    def record(self) -> dict[str, Any]:
        """The JSONL line."""
        lineage = {
            "run_id": self.run_id,
            "branch_id": self.branch_id,
            "trained_node_ids": self.trained_node_ids,
            "context_node_ids": self.context_node_ids,
        }
        return {
            "kind": self.kind,
            "task_id": self.task_id,
            "model": self.model,
            "messages": self.messages,
            "lineage": lineage,
        }


@dataclass
class Counts:
    runs: int = 0
    tasks: int = 0
    successful_trajectories: int = 0
    branch_points: int = 0
    rehearsal: int = 0
    counterfactual: int = 0
    skipped: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: getattr(self, name) for name in self.__dataclass_fields__}
        out["skipped"] = dict(self.skipped)
        out["examples"] = self.rehearsal + self.counterfactual
        return out


def _messages(texts: PromptTexts, path: list[Node], trained_from_step: int) -> list[dict[str, Any]]:
    """The conversation of ``path`` with no guidance; valid replies from the given step trained."""
    turns = [Turn(n.raw_response or "", n.observation) for n in path[1:]]
    chat = trajectory_messages("", path[0].observation, turns, texts=texts)[:-1]
    replies = iter(path[1:])
    out = []
    for message in chat:
        trained = False
        if message["role"] == "assistant":
            node = next(replies)
            trained = node.valid and node.step >= trained_from_step
        out.append({**message, "training": trained})
    return out


def _prompt_texts(run: dict[str, Any], action_help: ActionHelp) -> PromptTexts:
    """The prompt texts the run's model saw (recorded with the run); runs of older leafe recorded
    none, and get today's texts for their environment."""
    if run.get("prompts"):
        return PromptTexts.from_json(run["prompts"])
    return PromptTexts.for_env(action_help(run["env"]))


def _eligible(tree: RunTree, path: list[Node], selection: str, counts: Counts) -> bool:
    """Whether a successful path may be used: no rejected branch on it (and, for ``approved``,
    every rollback branch on it approved by a person)."""
    for branch_id in dict.fromkeys(n.branch_id for n in path):
        branch = tree.branches[branch_id]
        if branch.review == "rejected":
            counts.skipped["rejected"] += 1
            return False
        if selection == "approved" and branch.kind == "rollback" and branch.review != "approved":
            counts.skipped["not approved"] += 1
            return False
    return True


def _sample(items: list[Any], k: int, rng: random.Random) -> list[Any]:
    return items if len(items) <= k else rng.sample(items, k)


def _rehearsal_count(n: int, fraction: float) -> int:
    """A fraction of a task's successful trajectories, at least one when there is any and fraction > 0."""
    if n == 0 or fraction == 0:
        return 0
    return max(1, round(n * fraction))


def collect_examples(
    store: Store, settings: DatasetSettings, action_help: ActionHelp | None = None
) -> tuple[list[Example], Counts]:
    """Every example the settings select, deterministic for a given seed."""
    action_help = action_help or env_action_help
    run_ids = list(settings.runs) or [r["id"] for r in store.list_runs()]
    counts = Counts(runs=len(run_ids))
    reh_pool: dict[str, list[Example]] = defaultdict(list)
    cf_pool: dict[str, list[Example]] = defaultdict(list)
    seen: set[tuple[str, ...]] = set()
    for run_id in run_ids:
        tree = RunTree.load(store, run_id)
        texts = _prompt_texts(tree.run, action_help)
        task, model = tree.run["task_id"], tree.run["model"]
        success_paths = [tree.path(n.id) for n in tree.successes()]
        counts.successful_trajectories += len(success_paths)
        eligible = [p for p in success_paths if _eligible(tree, p, settings.selection, counts)]
        for path in eligible:
            key = (task, tuple(n.raw_response or "" for n in path[1:]))
            if key in seen:
                counts.skipped["duplicate trajectory"] += 1
                continue
            seen.add(key)
            reh_pool[task].append(
                Example(
                    kind="reh",
                    task_id=task,
                    run_id=run_id,
                    branch_id=path[-1].branch_id,
                    model=model,
                    messages=_messages(texts, path, trained_from_step=1),
                    trained_node_ids=[n.id for n in path[1:] if n.valid],
                    context_node_ids=[path[0].id],
                )
            )
        for branch in tree.branches.values():
            if branch.kind != "rollback":
                continue
            example = _counterfactual(tree, texts, branch, eligible, settings, counts)
            if example is None:
                continue
            key = ("cf", task, *(m["content"] for m in example.messages))
            if key in seen:  # the same history and correction found again (another run, same seed)
                counts.skipped["duplicate counterfactual"] += 1
                continue
            seen.add(key)
            cf_pool[task].append(example)
    examples: list[Example] = []
    tasks = sorted(set(reh_pool) | set(cf_pool))
    counts.tasks = len(tasks)
    for task in tasks:
        rng = random.Random(f"{settings.seed}:{task}")
        pool = reh_pool.get(task, [])
        chosen_reh = _sample(pool, _rehearsal_count(len(pool), settings.rehearsal_fraction), rng)
        chosen_cf = _sample(cf_pool.get(task, []), settings.cf_per_task, rng)
        examples.extend(chosen_cf + chosen_reh)
    if settings.limit and len(examples) > settings.limit:
        kept = _within_limit(examples, settings.limit, random.Random(f"{settings.seed}:limit"))
        counts.skipped["over the example limit"] += len(examples) - len(kept)
        examples = kept
    counts.rehearsal = sum(e.kind == "reh" for e in examples)
    counts.counterfactual = sum(e.kind == "cf" for e in examples)
    return examples, counts


def _within_limit(examples: list[Example], limit: int, rng: random.Random) -> list[Example]:
    """At most ``limit`` examples, counterfactual and rehearsal in the proportion the data has (at
    least one counterfactual example when there is any: they are what LEAFE adds), each drawn at
    random; the original order is kept."""
    cf = [i for i, e in enumerate(examples) if e.kind == "cf"]
    reh = [i for i, e in enumerate(examples) if e.kind != "cf"]
    cf_share = max(1, round(limit * len(cf) / len(examples))) if cf else 0
    keep = set(_sample(cf, cf_share, rng))
    keep |= set(_sample(reh, limit - len(keep), rng))
    return [e for i, e in enumerate(examples) if i in keep]


def _counterfactual(
    tree: RunTree,
    texts: PromptTexts,
    branch: Branch,
    eligible: list[list[Node]],
    settings: DatasetSettings,
    counts: Counts,
) -> Example | None:
    """The counterfactual example of one branch point, if its corrected reply led to a success."""
    first = tree.first_node(branch)
    if first is None or branch.rollback_step is None:
        return None
    through = [p for p in eligible if len(p) > first.step and p[first.step].id == first.id]
    if not through:
        return None
    counts.branch_points += 1
    if not first.valid:
        counts.skipped["invalid corrected reply"] += 1
        return None
    original = tree.original_node(branch)
    if original is not None and original.raw_response == first.raw_response:
        counts.skipped["corrected reply same as the original"] += 1
        return None
    path = min(through, key=len)
    tau = first.step
    used = path if settings.cf_suffix else path[: tau + 1]
    return Example(
        kind="cf",
        task_id=tree.run["task_id"],
        run_id=tree.run["id"],
        branch_id=branch.id,
        model=tree.run["model"],
        messages=_messages(texts, used, trained_from_step=tau),
        trained_node_ids=[n.id for n in used[tau:] if n.valid],
        context_node_ids=[n.id for n in used[:tau]],
    )


def build_dataset(
    store: Store, settings: DatasetSettings, out: Path, action_help: ActionHelp | None = None
) -> tuple[int, dict[str, Any]]:
    """Write the JSONL file (atomically) and record it with its settings, counts and lineage."""
    examples, counts = collect_examples(store, settings, action_help)
    if not examples:
        detail = ", ".join(f"{v} {k}" for k, v in counts.skipped.items()) or "none found"
        hint = " (approve branches in the TUI or with `leafe review`, or use --all-successful)"
        raise DatasetError(
            f"no examples: {counts.successful_trajectories} successful trajectories, skipped: {detail}"
            + (hint if settings.selection == "approved" else "")
        )
    out = out.expanduser().resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.record(), ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    payload = asdict(settings)
    payload["models"] = sorted({e.model for e in examples})
    # The messages live in the file; the store keeps the links back to the nodes.
    dataset_id = store.add_dataset(str(out), payload, counts.as_dict(), [asdict(e) for e in examples])
    return dataset_id, counts.as_dict()


def dataset_model(records: list[dict[str, Any]], default: str) -> str:
    """The model a dataset was explored with (its tokenizer and natural base), when its runs share one."""
    found = sorted({r["model"] for r in records if r.get("model")})
    return found[0] if len(found) == 1 else default


def read_dataset(path: Path) -> list[dict[str, Any]]:
    """The examples of a dataset file, each checked for the fields the trainer needs."""
    if not path.is_file():
        raise DatasetError(f"no dataset file {path}: give a JSONL file or a dataset id")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise DatasetError(f"{path}:{number}: expected an object with a non-empty 'messages' list")
            if not any(m.get("role") == "assistant" and m.get("training") for m in messages):
                raise DatasetError(f'{path}:{number}: no assistant message has "training": true')
            record.setdefault("kind", "reh")
            records.append(record)
    if not records:
        raise DatasetError(f"{path} has no examples")
    return records
