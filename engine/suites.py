"""Built-in task suites with a fixed train / held-out split, so an experiment never leaks.

Explore and train on ``NAME:train``, evaluate on ``NAME:held-out``. A task's side is decided by a
hash of its id alone (a quarter held out), so the split never changes when a suite grows and does
not depend on the order anything is listed in. Generated Sokoban levels are split by seed range.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from engine.errors import SettingError

SPLITS = ("train", "held-out")
HELD_OUT_SHARE = 4  # one task in four is held out
SOKOBAN_GEN = "sokoban/gen-7x7-b2-s{seed}"
SOKOBAN_TRAIN_SEEDS = range(0, 200)
SOKOBAN_HELD_OUT_SEEDS = range(10_000, 10_050)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: Callable[[], list[str]]  # every task of the suite, in a stable order
    split_of: Callable[[str], str]  # "train" or "held-out" (or the suite's own splits)
    splits: tuple[str, ...] = SPLITS
    aliases: tuple[tuple[str, str], ...] = ()  # (name, split): e.g. held-out is a benchmark's test split

    def split(self, which: str | None) -> list[str]:
        if which is None:
            return self.tasks()
        which = dict(self.aliases).get(which, which)
        if which not in self.splits:
            raise SettingError(f"a {self.name} split is one of {', '.join(self.splits)}, not {which!r}")
        return [task for task in self.tasks() if self.split_of(task) == which]


def hashed_split(task_id: str) -> str:
    digest = int.from_bytes(hashlib.sha256(task_id.encode()).digest()[:4], "big")
    return "held-out" if digest % HELD_OUT_SHARE == 0 else "train"


def _humaneval() -> list[str]:
    from engine.envs.code_sources import load_humaneval

    return [f"code/{p.id}" for p in load_humaneval()]


def _code_suite() -> list[str]:
    from engine.envs.suite_loader import load_suite

    return [f"code/{p.id}" for p in load_suite()]


def _sokoban() -> list[str]:
    seeds = [*SOKOBAN_TRAIN_SEEDS, *SOKOBAN_HELD_OUT_SEEDS]
    return [SOKOBAN_GEN.format(seed=seed) for seed in seeds]


def _sokoban_split(task_id: str) -> str:
    seed = int(task_id.rsplit("-s", 1)[1])
    return "held-out" if seed in SOKOBAN_HELD_OUT_SEEDS else "train"


def _scienceworld() -> list[str]:
    from engine.envs.sciworld import ScienceWorldEnv

    return [task.id for task in ScienceWorldEnv().tasks()]


def _scienceworld_split(task_id: str) -> str:
    from engine.envs.sciworld import split_of

    return split_of(task_id)


SUITES = {
    "humaneval": Suite("humaneval", "the 164 HumanEval problems (function tasks)", _humaneval, hashed_split),
    "code-suite": Suite(
        "code-suite", "leafe's stdin/stdout problems (CodeContests style)", _code_suite, hashed_split
    ),
    "sokoban": Suite(
        "sokoban",
        "generated 7x7 Sokoban levels with 2 boxes: seeds 0-199 train, 10000-10049 held out",
        _sokoban,
        _sokoban_split,
    ),
    "scienceworld": Suite(
        "scienceworld",
        "the 30 ScienceWorld tasks, all 7,207 variations, with the package's train / dev / test split "
        "(held-out is test)",
        _scienceworld,
        _scienceworld_split,
        splits=("train", "dev", "test"),
        aliases=(("held-out", "test"),),
    ),
}


def suite_tasks(reference: str) -> list[str]:
    """The tasks of ``NAME``, ``NAME:train`` or ``NAME:held-out``."""
    name, _, which = reference.partition(":")
    if name not in SUITES:
        raise SettingError(
            f"unknown suite {name!r}; known: {', '.join(SUITES)} (each with :train and :held-out)"
        )
    return SUITES[name].split(which or None)
