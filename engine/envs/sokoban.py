"""Sokoban as a text environment: push every box onto a target within 15 moves.

Task ids: ``sokoban/fixed-N`` (hand-made levels) and ``sokoban/gen-{W}x{H}-b{B}-s{SEED}`` (a level
generated from SEED; any well-formed id works, ``tasks()`` lists a stable default set). The episode
state is immutable and the level depends on the task id alone, so an episode is exactly
reproducible from (task id, actions); ``reset``'s seed is accepted and ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound
from engine.envs.sokoban_levels import (
    DIRECTIONS,
    FIXED_LEVELS,
    Level,
    Pos,
    add,
    generate,
    parse_level,
    render_grid,
    solve,
)

__all__ = ["SokobanEnv", "Level", "load_level", "parse_level", "solve"]

ENV_NAME = "sokoban"
MIN_SIZE, MAX_SIZE = 6, 12
MIN_BOXES, MAX_BOXES = 1, 4
DEFAULT_GENERATED: tuple[tuple[int, int, int, int], ...] = (  # (width, height, boxes, how many seeds)
    (6, 6, 1, 10),
    (7, 7, 2, 5),
    (8, 8, 2, 3),
    (8, 8, 3, 2),
)

_GEN_ID = re.compile(r"gen-(\d+)x(\d+)-b(\d+)-s(\d+)")
_ACCEPTED = "up, down, left, right"
_WHERE = {"up": "above you", "down": "below you", "left": "to your left", "right": "to your right"}

INTRO = (
    "Sokoban: push every box onto a target. Each action moves you one square up, down, left or right; "
    "walking into a box pushes it one square if the square behind it is free. You cannot pull boxes, "
    "push two boxes at once or walk through walls.\n"
    "Symbols: # wall, _ floor, O target, X box, P you (the player), √ box on a target, S you on a target. "
    "Up is toward the top row."
)


def _id_help() -> str:
    return (
        f"ids look like {ENV_NAME}/fixed-1 .. {ENV_NAME}/fixed-{len(FIXED_LEVELS)} or "
        f"{ENV_NAME}/gen-WxH-bB-sSEED (W, H {MIN_SIZE}-{MAX_SIZE}, B {MIN_BOXES}-{MAX_BOXES}), "
        f"e.g. {ENV_NAME}/gen-7x7-b2-s0"
    )


def _gen_params(name: str) -> tuple[int, int, int, int] | None:
    """(width, height, boxes, seed) of a canonical, in-range ``gen-…`` name, else None."""
    match = _GEN_ID.fullmatch(name)
    if match is None:
        return None
    width, height, boxes, seed = (int(group) for group in match.groups())
    if name != f"gen-{width}x{height}-b{boxes}-s{seed}":  # no leading zeros: one id per level
        return None
    sizes_ok = MIN_SIZE <= width <= MAX_SIZE and MIN_SIZE <= height <= MAX_SIZE
    return (width, height, boxes, seed) if sizes_ok and MIN_BOXES <= boxes <= MAX_BOXES else None


@lru_cache(maxsize=512)
def load_level(task_id: str) -> Level:
    """The level of a task id; raises TaskNotFound for an unknown or malformed id."""
    prefix, _, name = task_id.partition("/")
    if prefix == ENV_NAME:
        if name in FIXED_LEVELS:
            return parse_level(FIXED_LEVELS[name])
        params = _gen_params(name)
        if params is not None:
            return generate(*params)
    raise TaskNotFound(f"unknown task {task_id!r}: {_id_help()}")


@lru_cache(maxsize=512)
def _make_task(task_id: str) -> Task:
    level = load_level(task_id)
    solution = solve(level)
    n_boxes = len(level.boxes)
    name = task_id.partition("/")[2]
    params = _gen_params(name)
    if params is None:
        title = f"Fixed level {name.removeprefix('fixed-')}"
    else:
        title = f"Random {level.width}x{level.height}, {_boxes(n_boxes)} (seed {params[3]})"
    optimal = "unsolvable" if solution is None else f"optimal solution {len(solution)} moves"
    description = f"{level.width}x{level.height} grid, {_boxes(n_boxes)}, {optimal}."
    return Task(id=task_id, env=ENV_NAME, title=title, description=description)


def _boxes(n: int) -> str:
    return f"{n} box" if n == 1 else f"{n} boxes"


@lru_cache(maxsize=1)
def _listed_tasks() -> tuple[Task, ...]:
    ids = [f"{ENV_NAME}/{name}" for name in FIXED_LEVELS]
    for width, height, boxes, count in DEFAULT_GENERATED:
        ids += [f"{ENV_NAME}/gen-{width}x{height}-b{boxes}-s{seed}" for seed in range(count)]
    return tuple(_make_task(task_id) for task_id in ids)


@dataclass(frozen=True)
class Episode:
    """The whole state of one episode; each step makes a new one."""

    level: Level
    player: Pos
    boxes: tuple[Pos, ...]  # sorted
    max_steps: int
    steps: int = 0
    success: bool = False

    @property
    def steps_left(self) -> int:
        return self.max_steps - self.steps

    @property
    def done(self) -> bool:
        return self.success or self.steps_left <= 0

    @property
    def boxes_on_target(self) -> int:
        return sum(box in self.level.targets for box in self.boxes)

    def grid(self) -> str:
        return render_grid(self.level, self.player, self.boxes)


def _direction(action: ParsedAction) -> tuple[str | None, str]:
    """The move an action names, or (None, feedback saying why it is not one)."""
    accepted = f"Reply with exactly one of: {_ACCEPTED} (case does not matter)."
    if action.error is not None:
        error = " ".join(action.error.split()).rstrip(".") or "the reply did not parse"
        return None, f"Invalid action: {error}. {accepted}"
    if action.action is None:
        return None, f"Invalid action: no action was given. {accepted}"
    text = action.action.strip().lower()
    if text in DIRECTIONS:
        return text, ""
    shown = action.action.strip()
    shown = shown if len(shown) <= 40 else shown[:40] + "…"
    return None, f"Invalid action: {shown!r} is not a move. {accepted}"


def _move(episode: Episode, direction: str) -> tuple[Episode, bool, str]:
    """Apply a legal action name: (new episode before step counting, valid, feedback)."""
    level, delta, where = episode.level, DIRECTIONS[direction], _WHERE[direction]
    step = add(episode.player, delta)
    if step not in level.floor:
        return episode, False, f"Invalid move: you cannot move {direction}, there is a wall {where}."
    if step not in episode.boxes:
        return replace(episode, player=step), True, f"You moved {direction}."
    beyond = add(step, delta)
    if beyond not in level.floor or beyond in episode.boxes:
        blocker = "a wall" if beyond not in level.floor else "another box"
        feedback = f"Invalid move: the box {where} cannot be pushed {direction}, {blocker} is behind it."
        return episode, False, feedback
    boxes = tuple(sorted((set(episode.boxes) - {step}) | {beyond}))
    if beyond in level.targets:
        feedback = f"You pushed a box {direction} onto a target."
    elif step in level.targets:
        feedback = f"You pushed a box {direction}, off its target."
    else:
        feedback = f"You pushed a box {direction}."
    return replace(episode, player=step, boxes=boxes), True, feedback


class SokobanEnv(Environment):
    """Sokoban levels as a deterministic text environment (see the module docstring)."""

    name = ENV_NAME
    max_steps = 15
    action_help = (
        "Reply with exactly one move: up, down, left or right (one word, case does not matter). "
        "A move walks you one square in that direction, pushing a box in your way if the square behind "
        "it is free; up is toward the top row of the grid. Anything else is an invalid action and still "
        "uses up one of your steps."
    )

    def __init__(self) -> None:
        self._episode: Episode | None = None

    def tasks(self) -> list[Task]:
        return list(_listed_tasks())

    def task(self, task_id: str) -> Task:
        """Any valid id, including generated ones that ``tasks()`` does not list."""
        return _make_task(task_id)

    def action_grammar(self) -> str:
        return '("up" | "down" | "left" | "right")'

    def example_actions(self, task_id: str) -> list[str]:
        return ["up", "left", "down", "right", "right"]

    @property
    def grid(self) -> str:
        """The current grid as text (the same grid the last observation showed)."""
        return self._require_episode().grid()

    def snapshot(self) -> Any | None:
        return self._episode  # immutable: the state itself is the snapshot

    def restore(self, snapshot: Any) -> None:
        self._episode = snapshot

    def reset(self, task_id: str, seed: int = 0) -> str:
        return self.reset_level(load_level(task_id))  # the seed does not matter: the id fixes the level

    def reset_level(self, level: Level) -> str:
        """Start an episode on any level (e.g. one from ``parse_level``); returns the first observation."""
        self._episode = Episode(
            level=level, player=level.player, boxes=tuple(sorted(level.boxes)), max_steps=self.max_steps
        )
        return f"{INTRO}\n\n{self._status(self._episode)}"

    def step(self, action: ParsedAction) -> StepResult:
        episode = self._require_episode()
        if episode.done:
            feedback = "The episode is over; reset to play again."
            return self._result(episode, 0.0, False, feedback)
        direction, feedback = _direction(action)
        valid = False
        if direction is not None:
            episode, valid, feedback = _move(episode, direction)
        success = set(episode.boxes) <= episode.level.targets
        episode = replace(episode, steps=episode.steps + 1, success=success)
        if success:
            feedback += " All boxes are on targets: puzzle solved!"
        elif episode.done:
            feedback += " No steps left: the episode is over."
        self._episode = episode
        return self._result(episode, 1.0 if success else 0.0, valid, feedback)

    def _require_episode(self) -> Episode:
        if self._episode is None:
            raise RuntimeError("call reset(task_id) before step()")
        return self._episode

    def _status(self, episode: Episode) -> str:
        return (
            f"{episode.grid()}\n\n"
            f"Steps left: {episode.steps_left}. "
            f"Boxes on targets: {episode.boxes_on_target}/{len(episode.boxes)}."
        )

    def _result(self, episode: Episode, reward: float, valid: bool, feedback: str) -> StepResult:
        return StepResult(
            observation=f"{feedback}\n\n{self._status(episode)}",
            reward=reward,
            done=episode.done,
            success=episode.success,
            valid=valid,
            feedback=feedback,
            info={
                "boxes_on_target": episode.boxes_on_target,
                "boxes": len(episode.boxes),
                "steps_left": episode.steps_left,
            },
        )
