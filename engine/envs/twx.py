"""TextWorld-Express (Jansen & Côté 2022, Apache-2.0): fast generated text games.

Two of its games: ``twc`` (TextWorld Commonsense: put household objects where they belong, leafe's
stand-in for ALFWorld, whose game files cannot be had offline) and ``cookingworld`` (gather and
prepare a recipe's ingredients). Task ids are ``textworld-express/GAME/SEED``; the package splits
its seeds into train (0-999), dev (10000-10999) and test (20000-20999). The game parameters are kept
small (one room for twc), where a small model has a chance; ``params`` overrides them.

The simulator runs in a JVM (Java) through py4j, one per environment object, started at the first
reset; a step takes milliseconds, so a rollback is a reset and a replay of the prefix.
"""

from __future__ import annotations

from typing import Any

from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound
from engine.envs.external import no_action, require_program, world_class
from engine.errors import LeafeError

GAMES = {
    "twc": "numLocations=1,numItemsToPutAway=2,includeDoors=0,limitInventorySize=0",
    "cookingworld": "numLocations=1,numIngredients=2,numDistractorItems=2,includeDoors=0,"
    "limitInventorySize=0",
}
FOLDS = {"train": range(0, 1000), "dev": range(10_000, 11_000), "test": range(20_000, 21_000)}
UNKNOWN_ACTION = "Unknown action"
ASK = "Reply with one command in plain words."
HINT_ACTIONS = 15


def fold_of(task_id: str) -> str:
    _, seed = _parse(task_id)
    return next(fold for fold, seeds in FOLDS.items() if seed in seeds)


def _parse(task_id: str) -> tuple[str, int]:
    parts = task_id.split("/")
    if len(parts) != 3 or parts[0] != TextWorldExpressEnv.name or not parts[2].isdigit():
        raise TaskNotFound(
            f"TextWorld-Express task ids look like textworld-express/GAME/SEED, not {task_id!r}"
        )
    game, seed = parts[1], int(parts[2])
    if game not in GAMES:
        raise TaskNotFound(f"unknown TextWorld-Express game {game!r}; known: {', '.join(GAMES)}")
    if not any(seed in seeds for seeds in FOLDS.values()):
        raise TaskNotFound(f"seed {seed} is in no split: train 0-999, dev 10000-10999, test 20000-20999")
    return game, seed


class TextWorldExpressEnv(Environment):
    """The real TextWorld-Express simulator; rolled back by reset and replay."""

    name = "textworld-express"
    max_steps = 30
    action_help = (
        "Reply with one command in plain words, such as: look around, inventory, take OBJECT, "
        "put OBJECT in CONTAINER, put OBJECT on SUPPORTER, open CONTAINER, move west, examine "
        "OBJECT (cookingworld also: take OBJECT from CONTAINER, cook OBJECT in STOVE, slice OBJECT, "
        "prepare meal, eat meal). Objects are named as the observation names them. An "
        "unrecognised command is an invalid step and still counts."
    )

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = {**GAMES, **(params or {})}
        self._world: Any = None
        self._game: str | None = None
        self._steps = 0
        self._score = 0.0
        self._valid: dict[str, str] = {}  # the valid actions now, by their lower-case spelling

    def tasks(self) -> list[Task]:
        return [
            Task(f"{self.name}/{game}/{seed}", self.name, f"{game} (seed {seed}, {fold})")
            for game in GAMES
            for fold, seeds in FOLDS.items()
            for seed in seeds
        ]

    def task(self, task_id: str) -> Task:
        game, seed = _parse(task_id)
        return Task(task_id, self.name, f"{game} (seed {seed}, {fold_of(task_id)})")

    def action_grammar(self) -> str:
        return "[a-zA-Z0-9] [a-zA-Z0-9 ,.'-]{0,79}"

    def example_actions(self, task_id: str) -> list[str]:
        return ["look around", "inventory", "fly to the moon", "take nothing", "look around"]

    def _simulator(self) -> Any:
        if self._world is None:
            require_program("java", "TextWorld-Express (Java)", "default-jre-headless")
            world = world_class("textworld_express", "TextWorldExpressEnv", "textworld-express")
            self._world = world(envStepLimit=10_000)  # leafe ends episodes itself (max_steps)
        return self._world

    def reset(self, task_id: str, seed: int = 0) -> str:
        del seed  # the task's seed is the game: one fixed world
        game, game_seed = _parse(task_id)
        world = self._simulator()
        if self._game != game:
            world.load(game, self.params[game])
            self._game = game
        observation, infos = world.reset(seed=game_seed, gameFold=fold_of(task_id))
        self._steps, self._score = 0, 0.0
        self._valid = {a.lower(): a for a in infos.get("validActions", [])}
        return f"{infos['taskDescription']}\n\n{observation.strip()}"

    def step(self, action: ParsedAction) -> StepResult:
        if self._game is None:
            raise LeafeError("reset the TextWorld-Express environment before stepping it")
        self._steps += 1
        out_of_steps = self._steps >= self.max_steps
        if invalid := no_action(action, out_of_steps, self._info(False), ASK):
            return invalid
        command = " ".join(action.action.split()).rstrip(".!")  # "look around." is the same command
        command = self._valid.get(command.lower(), command)  # the game's own spelling ("T-shirt")
        observation, _, _, infos = self._world.step(command)
        self._valid = {a.lower(): a for a in infos.get("validActions", [])}
        score = float(infos["score"])
        change, self._score = score - self._score, score
        recognised = not observation.startswith(UNKNOWN_ACTION)
        feedback = f"Score {score:.2f} ({change:+.2f})."
        if not recognised:
            valid = sorted(infos.get("validActions", []))[:HINT_ACTIONS]
            feedback = (
                f"Invalid action: {command!r} is not a command here. Some that are: {'; '.join(valid)}."
            )
        success = bool(infos["tasksuccess"])
        done = success or bool(infos["taskfailure"]) or out_of_steps
        text = f"{observation.strip()}\n{feedback}"
        return StepResult(text, change, done, success, recognised, feedback, self._info(recognised))

    def _info(self, recognised: bool) -> dict[str, Any]:
        return {"score": self._score, "recognised": recognised, "moves": self._steps}

    def close(self) -> None:
        if self._world is not None:
            self._world.close()
            self._world = None
