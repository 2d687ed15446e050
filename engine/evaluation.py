"""Running a stored evaluation, summarising it, and comparing two with a paired bootstrap over tasks.

``run_evaluation`` fills in the samples an evaluation still lacks (all of them the first time, the
rest after a kill), committing each as it ends. ``summarise`` gives per-task successes and the mean
Pass@k; ``compare`` answers "is B better than A, at which k, and is it real?": the difference of
mean Pass@k with a paired bootstrap confidence interval over the tasks both evaluated, the tasks one
solves and the other does not, and a plain sentence when the interval holds zero.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

from engine.backends.base import ModelBackend
from engine.envs.base import Environment
from engine.errors import SettingError
from engine.eval_records import EvalSample
from engine.rollout import RolloutConfig, pass_at_k, rollout
from engine.specs import EnvSpec, ModelSpec
from engine.store import Store


def create_evaluation(
    store: Store,
    spec: ModelSpec,
    tasks: list[str],
    n: int,
    ks: list[int],
    config: RolloutConfig,
    env_specs: dict[str, EnvSpec],
    *,
    label: str = "",
) -> int:
    """Record an evaluation before its first rollout (with how to reopen its model and environments)."""
    stored = {**asdict(config), "env_specs": {t: e.to_json() for t, e in env_specs.items()}}
    return store.create_evaluation(
        model_spec=spec.to_json(), config=stored, tasks=list(tasks), n=n, ks=ks, label=label
    )


def run_evaluation(
    store: Store,
    eval_id: int,
    backend: ModelBackend,
    envs: dict[str, Environment],
    config: RolloutConfig,
    on_sample: Callable[[EvalSample, int, int], None] | None = None,
    *,
    workers: int = 1,
) -> None:
    """Roll out every (task, sample) the evaluation has no row for yet, committing each one.

    With ``workers`` > 1 that many samples are rolled out at once, each thread with environments of
    its own and the one backend (which must take concurrent calls: a served model). Samples are
    committed here, in the calling thread, as they end: the store keeps one writer, a kill loses only
    the samples in flight, and every sample's seeds depend on its task and index alone, so the
    results do not depend on the number of workers (as far as the server's sampling is
    deterministic).
    """
    if workers > 1 and not backend.concurrent_calls:
        raise SettingError(f"{backend.name} answers one call at a time: open it for {workers} workers")
    evaluation = store.evaluation(eval_id)
    done = {(s.task_id, s.sample) for s in store.eval_samples(eval_id, trajectories=False)}
    total = len(evaluation["tasks"]) * evaluation["n"]
    pending = [(t, i) for t in evaluation["tasks"] for i in range(evaluation["n"]) if (t, i) not in done]
    store.set_evaluation_status(eval_id, "running")

    def commit(sample: EvalSample) -> None:
        store.add_eval_sample(eval_id, sample)
        done.add((sample.task_id, sample.sample))
        if on_sample:
            on_sample(sample, len(done), total)

    try:
        if workers == 1:
            for task, index in pending:
                commit(_sample(backend, envs[task], task, index, config))
        else:
            _run_parallel(backend, envs, evaluation, pending, config, workers, commit)
    except BaseException:
        store.set_evaluation_status(eval_id, "interrupted")
        raise
    store.set_evaluation_status(eval_id, "finished")


def _sample(
    backend: ModelBackend, env: Environment, task: str, index: int, config: RolloutConfig
) -> EvalSample:
    result = rollout(backend, env, task, index, config)
    return EvalSample(
        task, index, result.success, result.steps, result.generated_tokens, result.seconds,
        [{"reply": r, "observation": o} for r, o in result.trajectory],
    )  # fmt: skip


def _run_parallel(
    backend: ModelBackend,
    envs: dict[str, Environment],
    evaluation: dict,
    pending: list[tuple[str, int]],
    config: RolloutConfig,
    workers: int,
    commit: Callable[[EvalSample], None],
) -> None:
    """Roll out ``pending`` on ``workers`` threads; each thread opens its own environments (an
    environment is stateful) from the evaluation's recorded specs."""
    from engine.registry import open_env

    specs = {t: EnvSpec.from_json(j) for t, j in evaluation["config"].get("env_specs", {}).items()}
    local = threading.local()
    opened: list[Environment] = []
    lock = threading.Lock()

    def env_for(task: str) -> Environment:
        mine = local.__dict__.setdefault("envs", {})
        if task not in mine:
            mine[task] = open_env(specs.get(task) or EnvSpec(envs[task].name))
            with lock:
                opened.append(mine[task])
        return mine[task]

    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="leafe-eval")
    try:
        futures = [
            pool.submit(lambda t=t, i=i: _sample(backend, env_for(t), t, i, config)) for t, i in pending
        ]
        for future in as_completed(futures):
            commit(future.result())
    finally:  # on an error or ^C nothing new starts; the samples in flight end before this returns
        pool.shutdown(wait=True, cancel_futures=True)
        for env in opened:
            env.close()


# --- summaries ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    n: int
    successes: int
    generated_tokens: int = 0
    seconds: float = 0.0

    def pass_at(self, k: int) -> float:
        return pass_at_k(self.n, self.successes, k)


@dataclass(frozen=True)
class Summary:
    eval_id: int
    tasks: list[TaskResult]
    ks: list[int]
    complete: bool  # every task has all its n samples

    def mean_pass_at(self, k: int) -> float:
        usable = [t for t in self.tasks if t.n >= k]
        return sum(t.pass_at(k) for t in usable) / len(usable) if usable else 0.0


def summarise(store: Store, eval_id: int) -> Summary:
    evaluation = store.evaluation(eval_id)
    samples: dict[str, list[EvalSample]] = {task: [] for task in evaluation["tasks"]}
    for sample in store.eval_samples(eval_id, trajectories=False):
        samples.setdefault(sample.task_id, []).append(sample)
    tasks = [
        TaskResult(
            task,
            len(rows),
            sum(s.success for s in rows),
            sum(s.generated_tokens for s in rows),
            sum(s.seconds for s in rows),
        )
        for task, rows in samples.items()
        if rows
    ]
    complete = all(len(samples[t]) == evaluation["n"] for t in evaluation["tasks"])
    return Summary(eval_id, tasks, list(evaluation["ks"]), complete)


# --- comparing two evaluations ------------------------------------------------------------------


@dataclass(frozen=True)
class KComparison:
    k: int
    mean_a: float
    mean_b: float
    difference: float  # B − A
    low: float  # the confidence interval of the difference
    high: float

    @property
    def real(self) -> bool:
        """Whether the interval excludes zero (the difference is not inside the noise)."""
        return self.low > 0 or self.high < 0

    def sentence(self, a: str, b: str, level: float) -> str:
        pct = f"{100 * self.difference:+.1f} points"
        ci = f"{100 * level:.0f}% CI [{100 * self.low:+.1f}, {100 * self.high:+.1f}]"
        if not self.real:
            return f"pass@{self.k}: {b} vs {a} {pct} ({ci}): inside the noise, no real difference shown"
        better = b if self.difference > 0 else a
        return f"pass@{self.k}: {b} vs {a} {pct} ({ci}): {better} is better"


@dataclass(frozen=True)
class Comparison:
    a: int
    b: int
    tasks: list[str]  # evaluated by both
    by_k: list[KComparison]
    only_a: list[str]  # solved (some sample) by A, never by B
    only_b: list[str]
    level: float
    resamples: int
    notes: list[str] = field(default_factory=list)


def compare(
    a: Summary, b: Summary, *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> Comparison:
    """B − A per k over the tasks both evaluated, with a paired bootstrap interval over those tasks."""
    if not 0 < level < 1:
        raise SettingError(f"the confidence level must be between 0 and 1, not {level}")
    by_task_a = {t.task_id: t for t in a.tasks}
    by_task_b = {t.task_id: t for t in b.tasks}
    shared = sorted(set(by_task_a) & set(by_task_b))
    if not shared:
        raise SettingError(f"evaluations {a.eval_id} and {b.eval_id} share no task")
    notes = []
    if set(by_task_a) != set(by_task_b):
        notes.append(f"compared on the {len(shared)} tasks both evaluated")
    ks = sorted(
        k for k in set(a.ks) | set(b.ks) if all(min(by_task_a[t].n, by_task_b[t].n) >= k for t in shared)
    )
    rng = random.Random(seed)
    draws = [[rng.randrange(len(shared)) for _ in shared] for _ in range(resamples)]
    rows = []
    for k in ks:
        diffs = [by_task_b[t].pass_at(k) - by_task_a[t].pass_at(k) for t in shared]
        mean_a = sum(by_task_a[t].pass_at(k) for t in shared) / len(shared)
        mean_b = sum(by_task_b[t].pass_at(k) for t in shared) / len(shared)
        boot = sorted(sum(diffs[i] for i in draw) / len(draw) for draw in draws)
        low = boot[int((1 - level) / 2 * (resamples - 1))]
        high = boot[int((1 + level) / 2 * (resamples - 1))]
        rows.append(KComparison(k, mean_a, mean_b, mean_b - mean_a, low, high))
    only_a = [t for t in shared if by_task_a[t].successes and not by_task_b[t].successes]
    only_b = [t for t in shared if by_task_b[t].successes and not by_task_a[t].successes]
    return Comparison(a.eval_id, b.eval_id, shared, rows, only_a, only_b, level, resamples, notes)
