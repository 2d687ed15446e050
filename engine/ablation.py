"""The Stage-1 ablation: three ways of spending the same environment-step budget on each task.

- ``independent``: fresh episodes from the task's start, no reflection (Pass@k sampling);
- ``refine``: linear retries: after a failed episode the model reflects and starts again from the
  beginning with the lesson (Reflexion-style; no rollback into the middle of a trajectory);
- ``tree``: LEAFE's rollback tree (periodic and failure reflections, rollback to step τ).

Every cell (strategy, task) is an ordinary run with ``step_budget`` = B, so each spends exactly B
environment steps (the last episode is cut short when the budget runs out; replays of a stored
prefix are not counted: they re-execute recorded actions and call no model). A person can open any
of these runs in the TUI. The runs are linked to the ablation as soon as they exist, so a killed
ablation resumes each one where it stopped (one process at a time: two resumes of the same
ablation at once are not guarded against).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from engine.backends.base import ModelBackend
from engine.envs.base import Environment
from engine.errors import SettingError
from engine.events import ExplorerEvent, RunChanged
from engine.explorer import STRATEGIES, ExploreConfig, Explorer
from engine.specs import EnvSpec, ModelSpec
from engine.store import Store

KIND = "explore"


def create_explore_ablation(
    store: Store,
    tasks: list[str],
    budget: int,
    config: ExploreConfig,
    *,
    model_spec: ModelSpec,
    env_specs: dict[str, EnvSpec],
    strategies: tuple[str, ...] = STRATEGIES,
) -> int:
    """Record the ablation (before any run) and return its id."""
    if budget < 1:
        raise SettingError(f"the step budget must be at least 1 environment step, not {budget}")
    tasks, strategies = list(dict.fromkeys(tasks)), tuple(dict.fromkeys(strategies))  # each once
    if not tasks:
        raise SettingError("an ablation needs at least one task")
    if not strategies:
        raise SettingError(f"an ablation needs at least one strategy of {', '.join(STRATEGIES)}")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise SettingError(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    base = asdict(config)
    base.update(budget=budget, step_budget=budget)  # an episode takes a step at least: B episodes at most
    settings = {
        "budget": budget,
        "strategies": list(strategies),
        "config": base,
        "env_specs": {task: spec.to_json() for task, spec in env_specs.items()},
    }
    return store.create_ablation(KIND, settings=settings, tasks=list(tasks), model_spec=model_spec.to_json())


def explore_ablation(store: Store, ablation_id: int) -> dict[str, Any]:
    """The ablation, checked to be a Stage-1 (explore) one."""
    ablation = store.ablation(ablation_id)
    if ablation["kind"] != KIND:
        raise SettingError(f"ablation {ablation_id} is a {ablation['kind']} ablation, not an explore one")
    return ablation


def tree_runs(store: Store, ablation_id: int) -> tuple[int, ...]:
    """The rollback-tree runs of the tasks every strategy finished: what Stage 2 learns from."""
    ablation = explore_ablation(store, ablation_id)
    if "tree" not in ablation["settings"]["strategies"]:
        raise SettingError(f"ablation {ablation_id} has no tree strategy to learn from")
    runs = next(r.runs for r in report(store, ablation_id).results if r.strategy == "tree")
    if not runs:
        raise SettingError(
            f"ablation {ablation_id} has no task finished by every strategy yet",
            hint=f"leafe ablate explore --resume {ablation_id}",
        )
    return runs


def strategy_config(ablation: dict[str, Any], strategy: str) -> ExploreConfig:
    config = ExploreConfig.from_dict({**ablation["settings"]["config"], "strategy": strategy})
    config.validate()
    return config


def run_explore_ablation(
    store: Store,
    ablation_id: int,
    backend: ModelBackend,
    envs: dict[str, Environment],
    *,
    model: str,
    on_event: Callable[[ExplorerEvent], None] | None = None,
    on_run: Callable[[str, str, int], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Run every (task, strategy) cell the ablation has not finished, task by task, so that a partial
    ablation still compares the strategies on the same tasks. ``on_run(strategy, task, run)`` is
    called when a cell ends."""
    ablation = explore_ablation(store, ablation_id)
    specs = {t: EnvSpec.from_json(j) for t, j in ablation["settings"]["env_specs"].items()}
    model_spec = ModelSpec.from_json(ablation["model_spec"])
    stop = stop or threading.Event()
    store.set_ablation_status(ablation_id, "running")
    try:
        for task in ablation["tasks"]:
            for strategy in ablation["settings"]["strategies"]:
                if stop.is_set():
                    break
                _run_cell(store, ablation_id, strategy, task, backend, envs[task], model, model_spec,
                          specs.get(task), on_event, stop)  # fmt: skip
                if on_run and not stop.is_set():
                    on_run(strategy, task, store.ablation_runs(ablation_id)[(strategy, task)])
    except BaseException:
        store.set_ablation_status(ablation_id, "interrupted")
        raise
    store.set_ablation_status(ablation_id, "stopped" if stop.is_set() else "finished")


def _run_cell(
    store: Store,
    ablation_id: int,
    strategy: str,
    task: str,
    backend: ModelBackend,
    env: Environment,
    model: str,
    model_spec: ModelSpec | None,
    env_spec: EnvSpec | None,
    on_event: Callable[[ExplorerEvent], None] | None,
    stop: threading.Event,
) -> None:
    config = strategy_config(store.ablation(ablation_id), strategy)
    run_id = store.ablation_runs(ablation_id).get((strategy, task))
    if run_id is not None and store.get_run(run_id)["status"] == "finished":
        return

    def event(ev: ExplorerEvent) -> None:
        # The run is linked the moment it exists (its first event), before its first step.
        if isinstance(ev, RunChanged) and (strategy, task) not in store.ablation_runs(ablation_id):
            store.link_ablation_run(ablation_id, strategy, task, ev.run_id)
        if on_event:
            on_event(ev)

    explorer = Explorer(store, backend, env, config, on_event=event, stop=stop)
    if run_id is not None:
        explorer.resume(run_id)
    else:
        explorer.start(task, model, model_spec=model_spec, env_spec=env_spec)


# --- the report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class StrategyResult:
    """What one strategy found with the same budget on the same tasks."""

    strategy: str
    tasks: int  # cells finished
    solved: int  # tasks with at least one successful episode
    successes: int  # successful episodes (trajectories Stage 2 can learn from)
    recovered: int  # successful episodes that began after a reflection (rollback or retry)
    steps: int
    episodes: int
    prompt_tokens: int
    evaluated_tokens: int  # prompt tokens not reused from the KV cache
    generated_tokens: int
    seconds: float
    runs: tuple[int, ...]

    @property
    def solved_share(self) -> float:
        return self.solved / self.tasks if self.tasks else 0.0

    @property
    def successes_per_task(self) -> float:
        return self.successes / self.tasks if self.tasks else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "solved_share": self.solved_share,
            "successes_per_task": self.successes_per_task,
        }


@dataclass(frozen=True)
class ExploreAblationReport:
    ablation_id: int
    budget: int
    tasks: list[str]
    results: list[StrategyResult]
    complete: bool  # every cell finished

    def as_dict(self) -> dict[str, Any]:
        return {
            "ablation_id": self.ablation_id,
            "budget": self.budget,
            "tasks": self.tasks,
            "complete": self.complete,
            "strategies": [r.as_dict() for r in self.results],
        }


def report(store: Store, ablation_id: int) -> ExploreAblationReport:
    """Per strategy, over the tasks every strategy has finished (a partial ablation compares like with
    like): tasks solved, successful trajectories, recoveries, steps and tokens."""
    ablation = explore_ablation(store, ablation_id)
    strategies = ablation["settings"]["strategies"]
    links = store.ablation_runs(ablation_id)
    finished = {cell: run for cell, run in links.items() if store.get_run(run)["status"] == "finished"}
    tasks = [t for t in ablation["tasks"] if all((s, t) in finished for s in strategies)]
    results = []
    for strategy in strategies:
        runs = [finished[(strategy, t)] for t in tasks]
        totals = [store.run_totals(r) for r in runs]
        successes = [_successes(store, r) for r in runs]
        results.append(
            StrategyResult(
                strategy=strategy,
                tasks=len(runs),
                solved=sum(1 for kinds in successes if kinds),
                successes=sum(len(kinds) for kinds in successes),
                recovered=sum(sum(1 for kind in kinds if kind == "rollback") for kinds in successes),
                steps=sum(t["steps"] for t in totals),
                episodes=sum(t["episodes"] for t in totals),
                prompt_tokens=sum(t["prompt_tokens"] for t in totals),
                evaluated_tokens=sum(t["evaluated_tokens"] for t in totals),
                generated_tokens=sum(t["generated_tokens"] for t in totals),
                seconds=sum(t["seconds"] for t in totals),
                runs=tuple(runs),
            )
        )
    complete = len(tasks) == len(ablation["tasks"])
    return ExploreAblationReport(ablation_id, ablation["settings"]["budget"], tasks, results, complete)


def _successes(store: Store, run_id: int) -> list[str]:
    """The kind (root, restart, rollback) of each successful episode of a run."""
    return [b.kind for b in store.branches(run_id) if b.outcome == "success"]
