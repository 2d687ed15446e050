"""Plain rollouts and Pass@k: how the paper evaluates a policy (no reflection, no rollback).

Each sample is one episode from the task's start with the same prompts, grammar and action parsing
as an exploration's root episode, so a trained adapter is measured on exactly the situation it was
distilled for: acting well without an experience summary in its context.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.actions import action_grammar, parse_action
from engine.backends.base import ModelBackend
from engine.envs.base import Environment
from engine.errors import SettingError
from engine.explorer import ExploreConfig, call_seed
from engine.prompts import Turn, trajectory_messages

_EXPLORE = ExploreConfig()  # one set of defaults: a rollout acts as an exploration's root episode


@dataclass(frozen=True)
class RolloutConfig:
    temperature: float = _EXPLORE.temperature
    max_tokens: int = _EXPLORE.max_tokens
    grammar: bool = _EXPLORE.grammar
    max_thought_chars: int = _EXPLORE.max_thought_chars
    seed: int = 0
    task_seed: int = 0
    max_steps: int | None = None  # end an episode as a failure after this many steps (None: the env's limit)


@dataclass(frozen=True)
class Rollout:
    success: bool
    steps: int
    generated_tokens: int
    seconds: float
    trajectory: tuple[tuple[str, str], ...] = ()  # (raw reply, observation after it) per step


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021 from n samples with c successes: 1 - C(n-c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise SettingError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0
    failure = 1.0
    for i in range(n - c + 1, n + 1):
        failure *= 1.0 - k / i
    return 1.0 - failure


def rollout(
    backend: ModelBackend, env: Environment, task_id: str, sample: int, config: RolloutConfig
) -> Rollout:
    """One episode of the policy alone, until the environment says it is done."""
    first = env.reset(task_id, config.task_seed)
    grammar = action_grammar(env.action_grammar(), config.max_thought_chars) if config.grammar else None
    turns: list[Turn] = []
    tokens, seconds = 0, 0.0
    while True:
        step = len(turns) + 1
        completion = backend.complete(
            trajectory_messages(env.action_help, first, turns),
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            seed=call_seed(config.seed, "eval", task_id, sample, step),
            grammar=grammar,
        )
        tokens += completion.generated_tokens
        seconds += completion.seconds
        result = env.step(parse_action(completion.text))
        turns.append(Turn(completion.text, result.observation))
        if result.done or (config.max_steps is not None and step >= config.max_steps):
            trajectory = tuple((t.reply, t.observation) for t in turns)
            return Rollout(result.success and result.done, step, tokens, seconds, trajectory)
