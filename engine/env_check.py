"""The conformance test every environment must pass (``leafe env check NAME``).

The explorer rolls an environment back by resetting it and replaying an action prefix, judges
success by what the environment says, and shows the model whatever the environment answers to a
malformed reply. So an environment must:
- list its tasks under its own name, each id once, and refuse an unknown id with TaskNotFound;
- say what an action looks like (``action_help``) and how long an episode may be (``max_steps``);
- reset deterministically for a task and seed, in this instance and in a fresh one;
- give the same observations when the same actions are replayed (in a fresh instance too);
- report invalid actions (a reply that did not parse, or nonsense) as invalid steps, never raise;
- end every episode within ``max_steps`` and call a step a success only when the episode is done;
- where it takes snapshots (``snapshot()``), continue from a restored one as from the original state.

Each check gives a plain sentence when it fails, so a person writing an environment knows what to
fix. The probe actions come from the environment's ``example_actions`` (optional) and a nonsense
action.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass

from engine.envs.base import Environment, ParsedAction, StepResult, TaskNotFound

NONSENSE = "@@ not an action @@"


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""


def _raised(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {where.filename.rsplit('/', 1)[-1]}:{where.lineno}" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def _episode(env: Environment, task: str, seed: int, actions: list[ParsedAction]) -> list[StepResult]:
    env.reset(task, seed)
    results = []
    for action in actions:
        result = env.step(action)
        results.append(result)
        if result.done:
            break
    return results


def check_environment(make: Callable[[], Environment], *, tasks: int = 2, seed: int = 0) -> list[Check]:
    """Run every check on the first ``tasks`` tasks; ``make`` builds a fresh instance."""
    checks: list[Check] = []

    def run(name: str, test: Callable[[], str | None]) -> None:
        try:
            problem = test()
        except Exception as exc:  # a check that raises has failed, with the place it raised
            problem = f"raised {_raised(exc)}"
        checks.append(Check(name, problem is None, problem or ""))

    env = make()
    listed = env.tasks()
    sample = [t.id for t in listed[:tasks]]

    def tasks_listed() -> str | None:
        if not listed:
            return "tasks() lists no task"
        ids = [t.id for t in listed]
        if len(set(ids)) != len(ids):
            return "a task id is listed twice"
        foreign = [i for i in ids if not i.startswith(f"{env.name}/")]
        return f"task id {foreign[0]!r} does not start with {env.name + '/'!r}" if foreign else None

    def described() -> str | None:
        if not isinstance(env.action_help, str) or not env.action_help.strip():
            return "action_help is empty: the model would not know what an action looks like"
        if not isinstance(env.max_steps, int) or env.max_steps < 1:
            return f"max_steps must be a whole number of at least 1, not {env.max_steps!r}"
        return None

    def unknown_task() -> str | None:
        try:
            env.reset(f"{env.name}/no-such-task-leafe-check", seed)
        except TaskNotFound:
            return None
        except Exception as exc:
            return f"reset of an unknown task raised {_raised(exc)} instead of TaskNotFound"
        return "reset accepted an unknown task id instead of raising TaskNotFound"

    def probe(task: str) -> list[ParsedAction]:
        examples = [ParsedAction(a) for a in env.example_actions(task)]
        return [*examples, ParsedAction(NONSENSE), *examples]

    def reset_deterministic() -> str | None:
        for task in sample:
            first, again, fresh = env.reset(task, seed), env.reset(task, seed), make().reset(task, seed)
            if not isinstance(first, str) or not first:
                return f"reset of {task} returned no text"
            if first != again:
                return f"two resets of {task} with seed {seed} gave different observations"
            if first != fresh:
                return f"a fresh instance's reset of {task} gave a different observation"
            for action in probe(task):  # an episode must leave nothing behind (focus, typed text)
                if env.step(action).done:
                    break
            if env.reset(task, seed) != first:
                return f"a reset of {task} after an episode gave a different observation than before it"
        return None

    def replay_reproduces() -> str | None:
        from engine.explorer import same_observation

        for task in sample:
            actions = probe(task)
            first = _episode(env, task, seed, actions)
            for label, other in (("replaying", env), ("replaying in a fresh instance", make())):
                again = _episode(other, task, seed, actions)
                if len(again) != len(first):
                    return f"{label} {task}'s actions ended the episode at another step"
                for number, (a, b) in enumerate(zip(first, again, strict=True), start=1):
                    if not same_observation(a.observation, b.observation):
                        return f"{label} {task}'s actions gave another observation at step {number}"
                    if (a.done, a.success, a.valid) != (b.done, b.success, b.valid):
                        return f"{label} {task}'s actions gave another outcome at step {number}"
        return None

    def bad_actions_reported() -> str | None:
        for task in sample:
            for action, what in (
                (ParsedAction(None, error="the reply did not parse"), "a reply that did not parse"),
                (ParsedAction(NONSENSE), f"the nonsense action {NONSENSE!r}"),
                (ParsedAction(""), "an empty action"),
            ):
                env.reset(task, seed)
                try:
                    result = env.step(action)
                except Exception as exc:
                    return f"{what} raised {_raised(exc)}; it must be an invalid step"
                if not isinstance(result, StepResult) or not isinstance(result.observation, str):
                    return f"{what} did not return a StepResult with a text observation"
                if action.action is None and result.valid:
                    return f"{what} was reported as a valid step"
                if result.success:
                    return f"{what} solved {task}: success must come from the environment's own goal"
        return None

    def episodes_end() -> str | None:
        for task in sample:
            env.reset(task, seed)
            for number in range(1, env.max_steps + 1):
                result = env.step(ParsedAction(NONSENSE))
                if result.success and not result.done:
                    return f"step {number} of {task} is a success but the episode is not done"
                if result.done:
                    break
            else:
                return f"{env.max_steps} steps of {task} (max_steps) did not end the episode"
        return None

    def snapshots_restore() -> str | None:
        """Where the environment takes snapshots: after a restore, the same actions give the same
        observations as they did from the state the snapshot was taken in."""
        from engine.explorer import same_observation

        for task in sample:
            actions = probe(task)
            env.reset(task, seed)
            half = len(actions) // 2
            for action in actions[:half]:
                env.step(action)
            snapshot = env.snapshot()
            if snapshot is None:
                return None  # takes none: the explorer resets and replays
            rest = [env.step(action).observation for action in actions[half:]]
            env.reset(task, seed)
            env.restore(snapshot)
            again = [env.step(action).observation for action in actions[half:]]
            if not all(same_observation(a, b) for a, b in zip(rest, again, strict=True)):
                return (
                    f"after restore(), {task}'s next actions gave other observations than from the "
                    "state the snapshot was taken in"
                )
        return None

    run("lists its tasks", tasks_listed)
    run("describes its actions", described)
    run("refuses unknown tasks", unknown_task)
    run("resets deterministically", reset_deterministic)
    run("replays reproduce observations", replay_reproduces)
    run("reports invalid actions", bad_actions_reported)
    run("ends episodes within max_steps", episodes_end)
    run("restores its snapshots (if it takes any)", snapshots_restore)
    return checks
