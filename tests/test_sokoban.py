"""Behaviour of the Sokoban environment, its level generator and its solver."""

from __future__ import annotations

import time

import pytest

from engine.envs import sokoban, sokoban_levels
from engine.envs.base import Environment, ParsedAction, TaskNotFound
from engine.envs.sokoban import SokobanEnv, load_level, solve
from engine.envs.sokoban_levels import DIRECTIONS, Level, add, generate, parse_level

ENV = SokobanEnv()
LISTED_IDS = [task.id for task in ENV.tasks()]


def act(text: str | None, error: str | None = None) -> ParsedAction:
    return ParsedAction(action=text, error=error)


def blocked_direction(level: Level, player, boxes, blocker: str) -> str | None:
    """A direction in which the player bumps a wall (``wall``), or pushes a box into a box (``box``)."""
    for name, delta in DIRECTIONS.items():
        step = add(player, delta)
        beyond = add(step, delta)
        if blocker == "wall" and step not in level.floor:
            return name
        if blocker == "box" and step in boxes and beyond in boxes:
            return name
    return None


def test_is_an_environment_with_the_expected_contract() -> None:
    assert isinstance(ENV, Environment)
    assert ENV.name == "sokoban"
    assert ENV.max_steps == 15
    assert ENV.action_grammar() == '("up" | "down" | "left" | "right")'
    for word in DIRECTIONS:
        assert word in ENV.action_help


def test_task_listing_is_stable_and_well_formed() -> None:
    tasks = ENV.tasks()
    assert [t.id for t in tasks] == [t.id for t in SokobanEnv().tasks()]
    assert len({t.id for t in tasks}) == len(tasks)
    fixed = [t for t in tasks if t.id.startswith("sokoban/fixed-")]
    generated = [t for t in tasks if t.id.startswith("sokoban/gen-")]
    assert 4 <= len(fixed) <= 6
    assert len(generated) >= 10
    assert len(fixed) + len(generated) == len(tasks)
    for task in tasks:
        assert task.env == "sokoban"
        assert task.title and "\n" not in task.title
        assert "\n" not in task.description and "moves" in task.description


@pytest.mark.parametrize("task_id", LISTED_IDS)
def test_every_listed_level_is_solvable_and_replays_to_success(task_id: str) -> None:
    solution = solve(load_level(task_id))
    assert solution is not None
    assert sokoban_levels.MIN_SOLUTION <= len(solution) <= ENV.max_steps
    assert str(len(solution)) in ENV.task(task_id).description

    env = SokobanEnv()
    env.reset(task_id)
    for i, move in enumerate(solution):
        result = env.step(act(move))
        assert result.valid
        last = i == len(solution) - 1
        assert result.done == last and result.success == last
        assert result.reward == (1.0 if last else 0.0)
    assert result.info["boxes_on_target"] == len(load_level(task_id).boxes)
    assert "X" not in env.grid


def test_generation_is_deterministic_and_depends_on_the_seed() -> None:
    first = generate(7, 7, 2, 42)
    again = generate(7, 7, 2, 42)
    assert first == again and first.render() == again.render()
    load_level.cache_clear()
    assert load_level("sokoban/gen-7x7-b2-s42").render() == first.render()
    grids = {generate(6, 6, 1, seed).render() for seed in range(10)}
    assert len(grids) > 1


@pytest.mark.parametrize(
    "task_id", ["sokoban/gen-9x7-b2-s123", "sokoban/gen-6x10-b3-s5", "sokoban/gen-12x12-b4-s1"]
)
def test_any_well_formed_generated_id_works(task_id: str) -> None:
    assert task_id not in LISTED_IDS
    level = load_level(task_id)
    width, height = (int(n) for n in task_id.split("gen-")[1].split("-")[0].split("x"))
    assert (level.width, level.height) == (width, height)
    assert level.render().count("\n") == height - 1
    solution = solve(level)
    assert solution is not None and 2 <= len(solution) <= 15
    assert ENV.task(task_id).id == task_id


def test_generated_levels_are_walled_and_consistent() -> None:
    for task_id in LISTED_IDS:
        level = load_level(task_id)
        rows = level.render().split("\n")
        assert rows[0] == "#" * level.width and rows[-1] == "#" * level.width
        assert all(row[0] == "#" and row[-1] == "#" for row in rows)
        assert len(level.boxes) == len(level.targets)
        assert parse_level(level.render()) == level


def test_default_set_generates_fast() -> None:
    start = time.perf_counter()
    for width, height, boxes, count in sokoban.DEFAULT_GENERATED:
        for seed in range(count):
            generate(width, height, boxes, seed)
    assert time.perf_counter() - start < 3.0


def test_wall_move_is_invalid_leaves_the_grid_and_uses_a_step() -> None:
    env = SokobanEnv()
    env.reset("sokoban/fixed-1")
    level = load_level("sokoban/fixed-1")
    direction = blocked_direction(level, level.player, level.boxes, "wall")
    assert direction is not None
    before = env.grid
    result = env.step(act(direction))
    assert not result.valid and not result.done and result.reward == 0.0
    assert result.feedback.startswith("Invalid move:")
    assert env.grid == before
    assert result.info["steps_left"] == ENV.max_steps - 1
    assert "Steps left: 14" in result.observation


def test_pushing_a_box_into_a_box_is_invalid() -> None:
    candidates = [tid for tid in LISTED_IDS if tid.startswith("sokoban/fixed-")]
    found = False
    for task_id in candidates:
        level = load_level(task_id)
        direction = blocked_direction(level, level.player, level.boxes, "box")
        if direction is None:
            continue
        found = True
        env = SokobanEnv()
        env.reset(task_id)
        before = env.grid
        result = env.step(act(direction))
        assert not result.valid
        assert result.feedback.startswith("Invalid move:") and "box" in result.feedback
        assert env.grid == before
        assert result.info["steps_left"] == ENV.max_steps - 1
    assert found, "some fixed level should start with the player behind two boxes in a row"


def test_pushing_a_box_into_a_wall_is_invalid() -> None:
    env = SokobanEnv()
    env.reset_level(parse_level("####\n#PX#\n#O_#\n####"))
    before = env.grid
    result = env.step(act("right"))
    assert not result.valid and result.feedback.startswith("Invalid move:") and "wall" in result.feedback
    assert env.grid == before and result.info["steps_left"] == ENV.max_steps - 1


@pytest.mark.parametrize("text", ["UP", "  Down\n", "Left", " right "])
def test_actions_are_case_and_whitespace_insensitive(text: str) -> None:
    plain, fancy = SokobanEnv(), SokobanEnv()
    plain.reset("sokoban/fixed-2")
    fancy.reset("sokoban/fixed-2")
    expected = plain.step(act(text.strip().lower()))
    result = fancy.step(act(text))
    assert not result.feedback.startswith("Invalid action")
    assert (result.observation, result.valid) == (expected.observation, expected.valid)


@pytest.mark.parametrize("text", ["jump", "", "up up", "north", "go left"])
def test_other_text_is_an_invalid_action_that_names_the_accepted_ones(text: str) -> None:
    env = SokobanEnv()
    env.reset("sokoban/fixed-1")
    before = env.grid
    result = env.step(act(text))
    assert not result.valid and result.feedback.startswith("Invalid action")
    for word in DIRECTIONS:
        assert word in result.feedback
    assert env.grid == before and result.info["steps_left"] == ENV.max_steps - 1


def test_unparsed_reply_is_invalid_and_reports_the_parse_error() -> None:
    env = SokobanEnv()
    env.reset("sokoban/fixed-1")
    result = env.step(act(None, error="no <action> tag in the reply"))
    assert not result.valid and result.reward == 0.0
    assert "no <action> tag in the reply" in result.feedback
    assert result.feedback in result.observation and "\n" not in result.feedback
    assert result.info["steps_left"] == ENV.max_steps - 1
    assert not env.step(act(None)).valid


def test_episode_ends_after_max_steps_without_success() -> None:
    env = SokobanEnv()
    env.reset("sokoban/fixed-1")
    level = load_level("sokoban/fixed-1")
    wall = blocked_direction(level, level.player, level.boxes, "wall")
    results = [env.step(act(wall)) for _ in range(ENV.max_steps)]
    assert [r.done for r in results] == [False] * (ENV.max_steps - 1) + [True]
    assert not any(r.success for r in results) and all(r.reward == 0.0 for r in results)
    assert "Steps left: 0" in results[-1].observation
    after = env.step(act("down"))
    assert after.done and not after.valid and not after.success


def test_reset_gives_back_the_initial_observation_and_ignores_the_seed() -> None:
    env = SokobanEnv()
    first = env.reset("sokoban/gen-7x7-b2-s0")
    for move in ("up", "left", "down", "right", "jump"):
        env.step(act(move))
    assert env.reset("sokoban/gen-7x7-b2-s0") == first
    assert env.reset("sokoban/gen-7x7-b2-s0", seed=123) == first
    assert load_level("sokoban/gen-7x7-b2-s0").render() in first
    assert "Steps left: 15" in first
    for symbol in ("#", "_", "O", "X", "P", "√", "S"):
        assert symbol in first


def test_replaying_the_same_actions_reproduces_the_episode() -> None:
    moves = ["down", "right", "UP", "bogus", "right", "left", "down"]

    def play() -> list[tuple[str, bool]]:
        env = SokobanEnv()
        env.reset("sokoban/fixed-2")
        return [(r.observation, r.valid) for r in (env.step(act(m)) for m in moves)]

    assert play() == play()


@pytest.mark.parametrize(
    "task_id",
    [
        "sokoban/nope",
        "sokoban/fixed-99",
        "sokoban/gen-6x6-b1",
        "sokoban/gen-3x3-b1-s0",
        "sokoban/gen-6x6-b9-s0",
        "sokoban/gen-6x6-b1-s01",
        "code/fixed-1",
        "fixed-1",
        "",
    ],
)
def test_unknown_ids_raise_task_not_found(task_id: str) -> None:
    with pytest.raises(TaskNotFound) as caught:
        SokobanEnv().reset(task_id)
    message = str(caught.value)
    assert "\n" not in message and "sokoban/gen-" in message and "sokoban/fixed-1" in message
    with pytest.raises(TaskNotFound):
        ENV.task(task_id)


def test_box_and_player_on_targets_render_as_check_and_s() -> None:
    level = parse_level("######\n#S_X√#\n#____#\n######")
    assert level.render().split("\n")[1] == "#S_X√#"
    env = SokobanEnv()
    assert "#S_X√#" in env.reset_level(level)
    result = env.step(act("right"))  # the player steps off its target
    assert "#OPX√#" in result.observation
    result = env.step(act("right"))  # X cannot be pushed into the √ box
    assert not result.valid and "another box" in result.feedback
    env.step(act("left"))
    assert env.grid.split("\n")[1] == "#S_X√#"

    env.reset_level(parse_level("#####\n#PXO#\n#####"))
    result = env.step(act("right"))
    assert result.success and result.done and result.reward == 1.0
    assert "#_P√#" in result.observation and "onto a target" in result.feedback


def test_fixed_levels_show_box_and_player_on_target_at_start() -> None:
    starts = "".join(load_level(tid).render() for tid in LISTED_IDS if tid.startswith("sokoban/fixed-"))
    assert "√" in starts and "S" in starts


def test_solver_finds_optimal_solutions_and_detects_dead_ends() -> None:
    assert solve("#####\n#PXO#\n#####") == ["right"]
    assert solve("######\n#P_XO#\n######") == ["right", "right"]
    assert solve("#####\n#X__#\n#_P_#\n#__O#\n#####") is None  # the box is stuck in a corner
    assert solve("#######\n#P__XO#\n#######", max_moves=2) is None
    assert solve("#######\n#P__XO#\n#######", max_moves=3) == ["right"] * 3
    level = load_level("sokoban/fixed-2")
    assert solve(level.render()) == solve(level)
    assert solve("√P") == []


def test_parse_level_rejects_malformed_grids() -> None:
    for text in ["", "#P#\n##", "#PX#", "#PXO?#", "#XOXO#"]:
        with pytest.raises(ValueError):
            parse_level(text)
