"""The Stage-2 ablation: rehearsal only against rehearsal + counterfactual (LEAFE), all else equal.

From the same runs, two datasets of the same size (the data budget): ``reh`` holds successful
trajectories only (rejection-sampling fine-tuning); ``leafe`` holds the counterfactual examples of the
recovered branches and rehearsal, drawn down to the same size in the proportion the runs gave. One
adapter is trained on each with the same settings and seed; then the base model and both adapters
are evaluated on held-out tasks with the same rollout settings, and compared
(``engine.evaluation.compare``).

Each stage is recorded in the ablation's ``state`` as soon as it exists (dataset ids, job ids,
evaluation ids), so a killed ablation resumes at the stage it stopped in: a training job from its
last checkpoint, an evaluation without repeating a sample.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.errors import SettingError
from engine.evaluation import Comparison, compare, create_evaluation, run_evaluation, summarise
from engine.rollout import RolloutConfig
from engine.runtime import env_spec_for, model_spec_for
from engine.store import Store
from trainer.dataset import DatasetError, DatasetSettings, build_dataset, collect_examples

KIND = "distill"
ARMS = ("reh", "leafe")  # trained arms; "base" is evaluated beside them
Log = Callable[[str], None]


@dataclass(frozen=True)
class DistillSettings:
    """Everything both arms share. The defaults are the training defaults of ``leafe train``."""

    runs: tuple[int, ...]  # the explored runs both datasets come from
    held_out: tuple[str, ...]  # the tasks all three are evaluated on
    examples: int = 0  # the data budget; 0: the smaller of the two datasets' natural sizes
    samples: int = 16
    ks: tuple[int, ...] = (1, 4, 16)
    base: str = ""  # the base model; empty: the runs' model
    epochs: int = 2
    lr: float = 1e-4
    rank: int = 16
    alpha: float = 32.0
    grad_accum: int = 4
    max_seq_len: int = 2048
    max_steps: int | None = None  # stop each training after this many optimiser steps (smoke runs)
    seed: int = 0
    with_base: bool = True  # evaluate the base model too

    def __post_init__(self) -> None:
        if not self.runs:
            raise SettingError("the distillation ablation needs explored runs to build its datasets from")
        if not self.held_out:
            raise SettingError("the distillation ablation needs held-out tasks to evaluate on")
        if self.samples < 1 or any(k < 1 or k > self.samples for k in self.ks):
            raise SettingError(f"pass@k needs 1 ≤ k ≤ n; got k = {list(self.ks)} with n = {self.samples}")
        if self.examples < 0:
            raise SettingError("the example budget must be 0 (automatic) or more")

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DistillSettings:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        for key in ("runs", "held_out", "ks"):
            known[key] = tuple(known.get(key, ()))
        return cls(**known)


def dataset_settings(settings: DistillSettings, arm: str, limit: int = 0) -> DatasetSettings:
    """The two datasets differ only in what they keep: successful trajectories alone, or those and
    the counterfactual examples of the recovered branches. Every successful branch not rejected by a
    person counts (an ablation has no one to approve branches)."""
    common = dict(selection="successful", runs=settings.runs, seed=settings.seed, limit=limit)
    if arm == "reh":
        return DatasetSettings(rehearsal_fraction=1.0, cf_per_task=0, **common)
    return DatasetSettings(rehearsal_fraction=1.0, **common)


def create_distill_ablation(
    store: Store, settings: DistillSettings, *, state: dict[str, Any] | None = None
) -> int:
    """Record the ablation and return its id. Everything that can be refused is refused first, so
    nothing is recorded for it: leaking or unknown held-out tasks, runs that recovered nowhere."""
    _check_runs(store, settings)
    for task in settings.held_out:
        env_spec_for(task, None)  # an unknown task fails now, not after hours of training
    _budget(store, settings)  # no counterfactual example: refused here
    ablation_id = store.create_ablation(KIND, settings=asdict(settings), tasks=list(settings.held_out))
    store.set_ablation_state(ablation_id, dict(state or {}))
    return ablation_id


def run_distill_ablation(store: Store, ablation_id: int, *, log: Log = print) -> None:
    """Run the ablation's stages it has not finished, with the settings it was recorded with."""
    ablation = store.ablation(ablation_id)
    if ablation["kind"] != KIND:
        raise SettingError(f"ablation {ablation_id} is a {ablation['kind']} ablation, not a distill one")
    settings = DistillSettings.from_dict(ablation["settings"])
    store.set_ablation_status(ablation_id, "running")
    try:
        _datasets(store, ablation_id, settings, log)
        _train(store, ablation_id, settings, log)
        _evaluate(store, ablation_id, settings, log)
    except BaseException:
        store.set_ablation_status(ablation_id, "interrupted")
        raise
    store.set_ablation_status(ablation_id, "finished")


def _check_runs(store: Store, settings: DistillSettings) -> None:
    explored = {store.get_run(run_id)["task_id"] for run_id in settings.runs}  # NotFound for a bad id
    leaked = explored & set(settings.held_out)
    if leaked:
        raise SettingError(
            f"held-out task {sorted(leaked)[0]} was explored in these runs: the evaluation would leak",
            hint="evaluate on tasks no run explored (a suite's :held-out split)",
        )


def _update(store: Store, ablation_id: int, section: str, arm: str, value: int) -> dict[str, Any]:
    state = store.ablation(ablation_id)["state"]
    state.setdefault(section, {})[arm] = value
    store.set_ablation_state(ablation_id, state)
    return state


def _budget(store: Store, settings: DistillSettings) -> int:
    """The number of examples each arm gets: the smaller natural size (or ``examples``, if smaller)."""
    sizes, counterfactual = [], 0
    for arm in ARMS:
        examples, counts = collect_examples(store, dataset_settings(settings, arm))
        sizes.append(len(examples))
        counterfactual += counts.counterfactual
    if counterfactual == 0:
        raise DatasetError(
            "no counterfactual example in these runs: no rollback branch recovered, so the two arms would "
            "be the same (explore more tasks, a larger budget or a stronger model first)"
        )
    return min(settings.examples or min(sizes), *sizes)


def _datasets(store: Store, ablation_id: int, settings: DistillSettings, log: Log) -> None:
    from trainer.job_service import next_dataset_path

    state = store.ablation(ablation_id)["state"]
    if all(arm in state.get("datasets", {}) for arm in ARMS):
        return
    if "budget" not in state:  # fixed once, so a resume never cuts the second dataset differently
        state["budget"] = _budget(store, settings)
        store.set_ablation_state(ablation_id, state)
        if settings.examples and state["budget"] < settings.examples:
            log(f"stage 2: {state['budget']} examples per arm: the runs give no more for rehearsal only")
    for arm in ARMS:
        if arm in state.get("datasets", {}):
            continue
        limited = dataset_settings(settings, arm, state["budget"])
        dataset_id, counts = build_dataset(store, limited, next_dataset_path(store))
        state = _update(store, ablation_id, "datasets", arm, dataset_id)
        log(
            f"stage 2: dataset {dataset_id} ({arm}): {counts['examples']} examples, "
            f"{counts['counterfactual']} counterfactual, {counts['rehearsal']} rehearsal"
        )


def _train(store: Store, ablation_id: int, settings: DistillSettings, log: Log) -> None:
    from trainer.jobs import create_job, prepare_resume
    from trainer.train import TrainConfig, run_job

    config = TrainConfig(
        rank=settings.rank,
        alpha=settings.alpha,
        epochs=settings.epochs,
        lr=settings.lr,
        grad_accum=settings.grad_accum,
        max_seq_len=settings.max_seq_len,
        max_steps=settings.max_steps,
        seed=settings.seed,
    )
    for arm in ARMS:
        state = store.ablation(ablation_id)["state"]
        job_id = state.get("jobs", {}).get(arm)
        if job_id is None:
            dataset = str(state["datasets"][arm])
            job_id = create_job(store, dataset, settings.base or None, "auto", config)
            _update(store, ablation_id, "jobs", arm, job_id)
            log(f"stage 2: training job {job_id} ({arm}) created")
        job = store.job(job_id)
        if job["status"] == "done":
            continue
        if job["status"] != "queued":
            prepare_resume(store, job_id)
        row = run_job(store, job_id)
        if row["status"] != "done":
            raise SettingError(
                f"training job {job_id} ({arm}) ended {row['status']}: {row.get('error') or ''}"
            )
        log(f"stage 2: job {job_id} ({arm}) done: adapter {adapter_of(store, job_id)}")


def adapter_of(store: Store, job_id: int) -> int:
    found = [a["id"] for a in store.adapters() if a.get("job_id") == job_id]
    if not found:
        raise SettingError(f"training job {job_id} left no adapter")
    return found[-1]


def _arms(settings: DistillSettings) -> tuple[str, ...]:
    return ("base", *ARMS) if settings.with_base else ARMS


def _evaluate(store: Store, ablation_id: int, settings: DistillSettings, log: Log) -> None:
    from engine.registry import open_backend, open_env

    first_run = store.get_run(settings.runs[0])
    explored = first_run["config"]
    rollout = RolloutConfig(
        temperature=explored.get("temperature", RolloutConfig.temperature),
        max_tokens=explored.get("max_tokens", RolloutConfig.max_tokens),
        grammar=explored.get("grammar", RolloutConfig.grammar),
        max_thought_chars=explored.get("max_thought_chars", RolloutConfig.max_thought_chars),
        seed=settings.seed,
    )
    env_specs = {task: env_spec_for(task, None) for task in settings.held_out}
    for arm in _arms(settings):
        state = store.ablation(ablation_id)["state"]
        eval_id = state.get("evals", {}).get(arm)
        if eval_id is not None and store.evaluation(eval_id)["status"] == "finished":
            continue
        base = settings.base or store.job(state["jobs"]["leafe"])["base"]
        adapter = None if arm == "base" else str(adapter_of(store, state["jobs"][arm]))
        spec = model_spec_for(base, adapter=adapter, db=store.path)
        if eval_id is None:
            eval_id = create_evaluation(
                store, spec, list(settings.held_out), settings.samples, list(settings.ks), rollout, env_specs,
                label=f"ablation {ablation_id}: {arm}",
            )  # fmt: skip
            _update(store, ablation_id, "evals", arm, eval_id)
        log(f"stage 2: evaluation {eval_id} ({arm}) on {len(settings.held_out)} held-out tasks")
        envs = {task: open_env(env_spec) for task, env_spec in env_specs.items()}
        backend = open_backend(spec)
        try:
            run_evaluation(store, eval_id, backend, envs, rollout)
        finally:
            backend.close()


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArmResult:
    arm: str
    eval_id: int | None
    dataset_id: int | None
    examples: int | None
    counterfactual: int | None
    job_id: int | None
    train_loss: float | None
    mean_pass_at: dict[int, float]
    complete: bool


@dataclass(frozen=True)
class DistillReport:
    ablation_id: int
    status: str
    held_out: list[str]
    arms: list[ArmResult]
    comparisons: list[Comparison] = field(default_factory=list)  # leafe vs reh, leafe vs base, reh vs base

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def report_distill(store: Store, ablation_id: int) -> DistillReport:
    ablation = store.ablation(ablation_id)
    state, settings = ablation["state"], ablation["settings"]
    arms, summaries = [], {}
    for arm in ("base", *ARMS) if settings.get("with_base", True) else ARMS:
        eval_id = state.get("evals", {}).get(arm)
        dataset_id = state.get("datasets", {}).get(arm)
        job_id = state.get("jobs", {}).get(arm)
        counts = store.dataset(dataset_id)["counts"] if dataset_id is not None else {}
        job = store.job(job_id) if job_id is not None else {}
        summary = summarise(store, eval_id) if eval_id is not None else None
        if summary is not None and summary.tasks:
            summaries[arm] = summary
        arms.append(
            ArmResult(
                arm=arm,
                eval_id=eval_id,
                dataset_id=dataset_id,
                examples=counts.get("examples"),
                counterfactual=counts.get("counterfactual"),
                job_id=job_id,
                train_loss=job.get("train_loss"),
                mean_pass_at={k: summary.mean_pass_at(k) for k in settings["ks"]} if summary else {},
                complete=bool(summary and summary.complete),
            )
        )
    comparisons = [
        compare(summaries[a], summaries[b], seed=0)
        for a, b in (("reh", "leafe"), ("base", "leafe"), ("base", "reh"))
        if a in summaries and b in summaries
    ]
    return DistillReport(ablation_id, ablation["status"], list(settings["held_out"]), arms, comparisons)
