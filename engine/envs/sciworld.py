"""ScienceWorld (Wang et al. 2022, Apache-2.0): 30 elementary-science tasks in a text world.

Task ids are ``scienceworld/TASK/VARIATION`` (``scienceworld/boil/0``). The package runs the
simulator in a JVM (Java 17) through py4j; one JVM per environment object, started at the first
reset. The task and variation catalogue (with the package's own train / dev / test split of the
variations) is shipped as ``sciworld_catalogue.json``, so listing tasks needs no JVM;
``python -m engine.envs.sciworld`` writes it again from the installed package.

Steps go through the simulator's raw ``step``: the package's public ``step()`` also lists every
valid action after each move, which makes it 10-40x slower (FACTS.md). Only an action the world
does not recognise gets a hint (the command templates), so a replay of a prefix (how the explorer
rolls back) stays on the fast path; ``reset task`` is refused (the explorer owns resets). Success
is the simulator's own: the task completed with the full score.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound
from engine.envs.external import no_action, require_program, world_class
from engine.errors import LeafeError

CATALOGUE = "sciworld_catalogue.json"
ASK = "Reply with one command in plain words."
UNKNOWN_ACTION = "No known action matches that input."


@cache
def catalogue() -> dict[str, dict[str, list[int]]]:
    """Task name -> {"train": [...], "dev": [...], "test": [...]} variation indices."""
    text = resources.files("engine.envs").joinpath(CATALOGUE).read_text(encoding="utf-8")
    return json.loads(text)["tasks"]


def split_of(task_id: str) -> str:
    """train, dev or test: the package's own split of a task's variations."""
    name, variation = _parse(task_id)
    for split, variations in catalogue()[name].items():
        if variation in variations:
            return split
    raise TaskNotFound(f"unknown task {task_id!r}")


def canonical(text: str) -> str:
    """``text`` with each run of tab-indented listing lines sorted.

    The simulator lists a room's objects in an order that differs from one load to the next (hash
    order in the JVM), which would make a replay disagree with the original; sorted, the same world
    reads the same.
    """
    out: list[str] = []
    block: list[str] = []
    for line in text.split("\n"):
        if line.startswith("\t"):
            block.append(line)
            continue
        out += sorted(block)
        block = []
        out.append(line)
    return "\n".join(out + sorted(block))


def _parse(task_id: str) -> tuple[str, int]:
    parts = task_id.split("/")
    tasks = catalogue()
    if len(parts) != 3 or parts[0] != ScienceWorldEnv.name or not parts[2].isdigit():
        raise TaskNotFound(f"ScienceWorld task ids look like scienceworld/TASK/VARIATION, not {task_id!r}")
    name, variation = parts[1], int(parts[2])
    if name not in tasks:
        raise TaskNotFound(f"unknown ScienceWorld task {name!r}; known: {', '.join(sorted(tasks))}")
    count = sum(len(v) for v in tasks[name].values())
    if variation >= count:
        raise TaskNotFound(f"ScienceWorld task {name} has variations 0-{count - 1}, not {variation}")
    return name, variation


class ScienceWorldEnv(Environment):
    """The real ScienceWorld simulator, rolled back by reload and replay of the action prefix."""

    name = "scienceworld"
    max_steps = 40
    action_help = (
        "Reply with one command in plain words, such as: look around, inventory, go to kitchen, "
        "open door to kitchen, pick up thermometer, focus on substance in pot, move pot to stove, "
        "activate stove, use thermometer on water, wait1, read recipe. Objects are named as the "
        "observation names them. 'focus on X' tells the world which object your task is about: use it "
        "only on the object the task asks for, a wrong focus ends the task. An unrecognised command "
        "is an invalid step and still counts."
    )

    def __init__(self, simplifications: str = "", step_limit: int = 100) -> None:
        self.simplifications = simplifications
        self.step_limit = step_limit
        self._world: Any = None
        self._task: tuple[str, int] | None = None
        self._steps = 0
        self._score = 0

    def tasks(self) -> list[Task]:
        out = []
        for name, splits in catalogue().items():
            for split, variations in splits.items():
                out += [
                    Task(f"{self.name}/{name}/{v}", self.name, f"{name} (variation {v}, {split})")
                    for v in variations
                ]
        return sorted(out, key=lambda t: (t.id.split("/")[1], int(t.id.split("/")[2])))

    def task(self, task_id: str) -> Task:
        name, variation = _parse(task_id)
        return Task(task_id, self.name, f"{name} (variation {variation}, {split_of(task_id)})")

    def action_grammar(self) -> str:
        return "[a-zA-Z0-9] [a-zA-Z0-9 ,.'-]{0,79}"

    def example_actions(self, task_id: str) -> list[str]:
        return ["look around", "inventory", "fly to the moon", "open door to kitchen", "go to kitchen"]

    # --- episodes ------------------------------------------------------------------------------
    def _simulator(self) -> Any:
        if self._world is None:
            require_program("java", "ScienceWorld (Java 17)", "default-jre-headless")
            world = world_class("scienceworld", "ScienceWorldEnv", "scienceworld")
            self._world = world("", envStepLimit=self.step_limit)
        return self._world

    def reset(self, task_id: str, seed: int = 0) -> str:
        del seed  # a variation is one fixed world: the simulator is deterministic
        name, variation = _parse(task_id)
        world = self._simulator()
        # A reload every time: the simulator's own reset does not give the same world back.
        world.load(name, variation, self.simplifications)
        self._task = (name, variation)
        self._steps, self._score = 0, 0
        look = canonical(world.server.step("look around"))
        return f"{world.get_task_description()}\n\n{look}"

    def step(self, action: ParsedAction) -> StepResult:
        if self._task is None:
            raise LeafeError("reset the ScienceWorld environment before stepping it")
        world = self._world
        self._steps += 1
        out_of_steps = self._steps >= self.max_steps
        if invalid := no_action(action, out_of_steps, self._info(False), ASK):
            return invalid
        command = " ".join(action.action.split()).lower().rstrip(".!")  # "look around." is the same command
        if command in ("reset task", "reset"):
            feedback = "Invalid action: the episode cannot be reset from inside. Reply with one command."
            return StepResult(feedback, 0.0, out_of_steps, False, False, feedback, self._info(False))
        observation = canonical(world.server.step(command))
        score = int(round(100 * world.server.getScore()))
        completed = bool(world.server.getCompleted()) or score < 0
        change, self._score = score - self._score, score
        recognised = observation.strip() != UNKNOWN_ACTION
        feedback = f"Score {score}/100 ({change:+d})."
        if not recognised:
            templates = [t for t in world.get_possible_actions() if t != "reset task"]
            feedback = (
                f"Invalid action: {command!r} is not a command here. Commands are: {', '.join(templates)} "
                "(OBJ: an object or place the observation names)."
            )
        success = completed and score >= 100
        done = completed or out_of_steps
        text = f"{observation}\n{feedback}"
        return StepResult(text, float(change), done, success, recognised, feedback, self._info(recognised))

    def _info(self, recognised: bool) -> dict[str, Any]:
        return {"score": self._score, "recognised": recognised, "moves": self._steps}

    def close(self) -> None:
        if self._world is not None:
            self._world.close()
            self._world = None


def write_catalogue() -> dict[str, dict[str, list[int]]]:
    """Every task's train / dev / test variations, read from the installed package (a JVM)."""
    from scienceworld import ScienceWorldEnv as World

    world = World("")
    tasks: dict[str, dict[str, list[int]]] = {}
    try:
        for name in world.get_task_names():
            world.load(name, 0)
            tasks[name] = {
                "train": list(world.get_variations_train()),
                "dev": list(world.get_variations_dev()),
                "test": list(world.get_variations_test()),
            }
    finally:
        world.close()
    return tasks


if __name__ == "__main__":  # python -m engine.envs.sciworld: write the shipped catalogue again
    from importlib.metadata import version
    from pathlib import Path

    rows = ",\n".join(
        f"  {json.dumps(name)}: {json.dumps(splits)}" for name, splits in write_catalogue().items()
    )
    text = f'{{"package": "scienceworld {version("scienceworld")}", "tasks": {{\n{rows}\n}}}}\n'
    (Path(__file__).parent / CATALOGUE).write_text(text, encoding="utf-8")
