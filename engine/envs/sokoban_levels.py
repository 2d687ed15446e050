"""Sokoban levels: the text format, an optimal solver, a reverse-play generator and the fixed levels.

Positions are ``(row, col)`` tuples; everything outside a level's ``floor`` is wall. Levels are
immutable so a level (and any state derived from it) can be shared and cached freely.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from engine.errors import SettingError

Pos = tuple[int, int]
State = tuple[Pos, frozenset[Pos]]  # (player, boxes)

WALL, FLOOR, TARGET, BOX, PLAYER, BOX_ON_TARGET, PLAYER_ON_TARGET = "#", "_", "O", "X", "P", "√", "S"

# Dict order is the solver's move order, so solutions are reproducible.
DIRECTIONS: dict[str, Pos] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}

MIN_SOLUTION, MAX_SOLUTION = 2, 15


@dataclass(frozen=True)
class Level:
    """A level's static layout plus its initial box and player positions."""

    width: int
    height: int
    floor: frozenset[Pos]  # every non-wall cell
    targets: frozenset[Pos]
    boxes: frozenset[Pos]
    player: Pos

    def render(self) -> str:
        return render_grid(self, self.player, self.boxes)


def add(pos: Pos, delta: Pos) -> Pos:
    return (pos[0] + delta[0], pos[1] + delta[1])


def render_grid(level: Level, player: Pos, boxes: Iterable[Pos]) -> str:
    """The text grid of ``level`` with the player and boxes at the given positions."""
    box_set = frozenset(boxes)
    rows = []
    for r in range(level.height):
        rows.append("".join(_symbol(level, (r, c), player, box_set) for c in range(level.width)))
    return "\n".join(rows)


def _symbol(level: Level, pos: Pos, player: Pos, boxes: frozenset[Pos]) -> str:
    if pos not in level.floor:
        return WALL
    on_target = pos in level.targets
    if pos == player:
        return PLAYER_ON_TARGET if on_target else PLAYER
    if pos in boxes:
        return BOX_ON_TARGET if on_target else BOX
    return TARGET if on_target else FLOOR


def parse_level(text: str) -> Level:
    """Parse a rectangular text grid; raises ValueError when it is not a well-formed level."""
    lines = text.strip("\n").split("\n")
    width = len(lines[0]) if lines else 0
    if not width or any(len(line) != width for line in lines):
        raise SettingError("a level must be a non-empty rectangle of symbols")
    floor, targets, boxes, players = set(), set(), set(), []
    for r, line in enumerate(lines):
        for c, ch in enumerate(line):
            pos = (r, c)
            if ch not in "#_OXP√S":
                raise SettingError(f"unknown symbol {ch!r} at row {r}, column {c}")
            if ch != WALL:
                floor.add(pos)
            if ch in (TARGET, BOX_ON_TARGET, PLAYER_ON_TARGET):
                targets.add(pos)
            if ch in (BOX, BOX_ON_TARGET):
                boxes.add(pos)
            if ch in (PLAYER, PLAYER_ON_TARGET):
                players.append(pos)
    if len(players) != 1:
        raise SettingError(f"a level needs exactly one player, found {len(players)}")
    if not boxes or len(boxes) != len(targets):
        raise SettingError(
            f"a level needs as many targets as boxes, at least one: {len(boxes)} vs {len(targets)}"
        )
    return Level(width, len(lines), frozenset(floor), frozenset(targets), frozenset(boxes), players[0])


# --------------------------------------------------------------------------------------------- solver


def dead_squares(level: Level) -> frozenset[Pos]:
    """Floor cells from which a box can never reach any target, even with no other box in the way.

    Computed by pulling a box backwards from every target: a cell the pulls never reach is dead.
    """
    live = set(level.targets)
    stack = list(level.targets)
    while stack:
        box = stack.pop()
        for delta in DIRECTIONS.values():
            new_box = add(box, delta)  # the player stands here and steps one further while pulling
            if new_box in level.floor and add(new_box, delta) in level.floor and new_box not in live:
                live.add(new_box)
                stack.append(new_box)
    return level.floor - live


def solve(level: Level | str, max_moves: int | None = None) -> list[str] | None:
    """An optimal (fewest moves) solution of ``level``, or None if there is none within ``max_moves``.

    Breadth-first search over (player, boxes), never pushing a box onto a dead square.
    """
    if isinstance(level, str):
        level = parse_level(level)
    if level.boxes <= level.targets:
        return []
    dead = dead_squares(level)
    if level.boxes & dead:
        return None
    start: State = (level.player, level.boxes)
    parents: dict[State, tuple[State, str] | None] = {start: None}
    frontier = [start]
    depth = 0
    while frontier and (max_moves is None or depth < max_moves):
        depth += 1
        next_frontier: list[State] = []
        for state in frontier:
            for name, new_state in _successors(level, dead, state):
                if new_state in parents:
                    continue
                parents[new_state] = (state, name)
                if new_state[1] <= level.targets:
                    return _path(parents, new_state)
                next_frontier.append(new_state)
        frontier = next_frontier
    return None


def _successors(level: Level, dead: frozenset[Pos], state: State) -> Iterator[tuple[str, State]]:
    player, boxes = state
    for name, delta in DIRECTIONS.items():
        step = add(player, delta)
        if step not in level.floor:
            continue
        if step in boxes:
            beyond = add(step, delta)
            if beyond not in level.floor or beyond in boxes or beyond in dead:
                continue
            yield name, (step, (boxes - {step}) | {beyond})
        else:
            yield name, (step, boxes)


def _path(parents: dict[State, tuple[State, str] | None], state: State) -> list[str]:
    moves = []
    while (link := parents[state]) is not None:
        state, name = link
        moves.append(name)
    return moves[::-1]


# ------------------------------------------------------------------------------------------ generator

MAX_ATTEMPTS = 1000


def generate(width: int, height: int, n_boxes: int, seed: int) -> Level:
    """A level whose optimal solution takes MIN_SOLUTION..MAX_SOLUTION moves, determined by the arguments.

    Each draw carves a random room, puts the boxes on random targets and plays backwards from
    there (see ``_reverse_layers``); the forward solver then checks the pick. Draws come from
    ``random.Random(seed)`` only, so the same arguments always give the same level.
    """
    rng = random.Random(seed)
    for _ in range(MAX_ATTEMPTS):
        level = _draw_level(rng, width, height, n_boxes)
        if level is None:
            continue
        solution = solve(level, max_moves=MAX_SOLUTION)
        if solution is not None and len(solution) >= MIN_SOLUTION:
            return level
    raise RuntimeError(f"no solvable {width}x{height} level with {n_boxes} boxes after {MAX_ATTEMPTS} draws")


def _draw_level(rng: random.Random, width: int, height: int, n_boxes: int) -> Level | None:
    floor = _carve_room(rng, width, height)
    if len(floor) < n_boxes + 3:
        return None
    targets = frozenset(rng.sample(sorted(floor), n_boxes))
    layers = _reverse_layers(floor, targets, MAX_SOLUTION)
    deepest = len(layers) - 1
    if deepest < MIN_SOLUTION:
        return None
    # Favour the harder half of what the room allows, but keep some variety.
    distance = rng.randint(max(MIN_SOLUTION, (deepest + 1) // 2), deepest)
    player, boxes = rng.choice(layers[distance])
    return Level(width, height, floor, targets, boxes, player)


def _carve_room(rng: random.Random, width: int, height: int) -> frozenset[Pos]:
    """A connected room carved by a random walk inside the border walls."""
    interior = (height - 2) * (width - 2)
    wanted = round(interior * rng.uniform(0.5, 0.8))
    deltas = list(DIRECTIONS.values())
    pos = (rng.randint(1, height - 2), rng.randint(1, width - 2))
    delta = rng.choice(deltas)
    floor = {pos}
    for _ in range(interior * 20):
        if len(floor) >= wanted:
            break
        if rng.random() < 0.35:
            delta = rng.choice(deltas)
        nxt = add(pos, delta)
        if 1 <= nxt[0] <= height - 2 and 1 <= nxt[1] <= width - 2:
            pos = nxt
            floor.add(pos)
    return frozenset(floor)


def _reverse_layers(floor: frozenset[Pos], targets: frozenset[Pos], max_depth: int) -> list[list[State]]:
    """States grouped by their exact optimal distance to the solved state, up to ``max_depth``.

    Exhaustive reverse play: breadth-first from every solved state (boxes on the targets, player
    anywhere), undoing walks and pushes (a push undone is a pull). ``layers[d]`` holds the states
    whose shortest solution has exactly ``d`` moves. Lists, not sets, keep the order (and so the
    generator's random picks) reproducible.
    """
    solved = [(player, targets) for player in sorted(floor - targets)]
    seen = set(solved)
    layers = [solved]
    for _ in range(max_depth):
        layer = []
        for state in layers[-1]:
            for previous in _predecessors(floor, state):
                if previous not in seen:
                    seen.add(previous)
                    layer.append(previous)
        if not layer:
            break
        layers.append(layer)
    return layers


def _predecessors(floor: frozenset[Pos], state: State) -> Iterator[State]:
    """States one forward move before ``state``: the player steps back, maybe pulling a box."""
    player, boxes = state
    for delta in DIRECTIONS.values():
        back = add(player, delta)
        if back not in floor or back in boxes:
            continue
        yield back, boxes
        pushed = (player[0] - delta[0], player[1] - delta[1])  # where a box pushed from `player` ended up
        if pushed in boxes:
            yield back, (boxes - {pushed}) | {player}


# --------------------------------------------------------------------------------------- fixed levels

FIXED_LEVELS: dict[str, str] = {
    "fixed-1": """
######
#P___#
#_X__#
#___O#
#____#
######
""",
    "fixed-2": """
#######
#O___O#
#_X_X_#
#__P__#
#_____#
#######
""",
    "fixed-3": """
#######
#_____#
#PXX_O#
#___O_#
#######
""",
    "fixed-4": """
#######
##S___#
#__X__#
#_X#O_#
#_____#
#######
""",
    "fixed-5": """
########
#O__####
#_X_P__#
#__#√__#
##_X___#
#___#_O#
#______#
########
""",
}
