"""ScienceWorld and TextWorld-Express, the real simulators (a JVM each): ids and splits, success as
the simulator decides it, feedback on unrecognised commands, and a rollback tree explored on them."""

from __future__ import annotations

import shutil
import time

import pytest

from engine.envs.base import ParsedAction, TaskNotFound
from engine.envs.sciworld import ScienceWorldEnv, catalogue, split_of
from engine.envs.twx import TextWorldExpressEnv, fold_of
from engine.errors import SettingError
from engine.explorer import ExploreConfig, Explorer
from engine.store import Store
from engine.suites import suite_tasks
from tests.doubles import ScriptedBackend, act, guided, is_reflection, reflect

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="no Java (make setup installs it)")


def _gold_scienceworld(task: str, variation: int) -> list[str]:
    from scienceworld import ScienceWorldEnv as World

    world = World("")
    try:
        world.load(task, variation, "", generateGoldPath=True)
        return list(world.get_gold_action_sequence())
    finally:
        world.close()


def _gold_twx(game: str, seed: int) -> list[str]:
    from textworld_express import TextWorldExpressEnv as World

    from engine.envs.twx import GAMES

    world = World(envStepLimit=100)
    try:
        world.load(game, GAMES[game])
        world.reset(seed=seed, gameFold=fold_of(f"textworld-express/{game}/{seed}"), generateGoldPath=True)
        return list(world.getGoldActionSequence())
    finally:
        world.close()


def _play(env, task_id: str, actions: list[str]):
    env.reset(task_id)
    return [env.step(ParsedAction(a)) for a in actions]


@needs_java
def test_the_shipped_scienceworld_catalogue_is_the_packages() -> None:
    from scienceworld import ScienceWorldEnv as World

    world = World("")
    try:
        world.load("boil", 0)
        live = {"train": world.get_variations_train(), "dev": world.get_variations_dev()}
        live["test"] = world.get_variations_test()
    finally:
        world.close()
    assert catalogue()["boil"] == {k: list(v) for k, v in live.items()}
    assert len(catalogue()) == 30 and sum(len(v) for t in catalogue().values() for v in t.values()) == 7207


@needs_java
def test_scienceworld_succeeds_only_when_the_simulator_says_so() -> None:
    gold = _gold_scienceworld("find-animal", 0)
    env = ScienceWorldEnv()
    results = _play(env, "scienceworld/find-animal/0", gold)
    assert results[-1].success and results[-1].done and results[-1].info["score"] == 100
    assert not any(r.success for r in results[:-1]) and all(r.valid for r in results)
    env.close()


@needs_java
def test_scienceworld_explains_an_unrecognised_command_and_refuses_a_reset() -> None:
    env = ScienceWorldEnv()
    nonsense, reset = _play(env, "scienceworld/boil/0", ["fly to the moon", "reset task"])
    assert not nonsense.valid and "focus on OBJ" in nonsense.feedback and not nonsense.done
    assert not reset.valid and "cannot be reset" in reset.feedback
    env.close()


@needs_java
def test_scienceworld_ids_and_splits() -> None:
    assert split_of("scienceworld/boil/0") == "train" and split_of("scienceworld/boil/29") == "test"
    dev = suite_tasks("scienceworld:dev")
    assert dev and all(split_of(t) == "dev" for t in dev)
    assert suite_tasks("scienceworld:held-out") == suite_tasks("scienceworld:test")
    with pytest.raises(TaskNotFound, match="variations 0-29"):
        ScienceWorldEnv().task("scienceworld/boil/30")
    with pytest.raises(SettingError, match="train, dev, test"):
        suite_tasks("scienceworld:valid")


@needs_java
@pytest.mark.parametrize(("game", "seed"), [("twc", 0), ("cookingworld", 10_000)])
def test_textworld_express_games_succeed_on_their_gold_path(game: str, seed: int) -> None:
    gold = _gold_twx(game, seed)
    env = TextWorldExpressEnv()
    results = _play(env, f"textworld-express/{game}/{seed}", gold)
    assert results[-1].success and results[-1].done
    assert not any(r.success for r in results[:-1])
    env.close()


@needs_java
def test_textworld_express_ids_and_folds() -> None:
    assert fold_of("textworld-express/twc/5") == "train" and fold_of("textworld-express/twc/20001") == "test"
    with pytest.raises(TaskNotFound, match="no split"):
        TextWorldExpressEnv().task("textworld-express/twc/5000")
    env = TextWorldExpressEnv()
    (nonsense,) = _play(env, "textworld-express/twc/0", ["fly to the moon"])
    assert not nonsense.valid and "Some that are:" in nonsense.feedback
    env.close()


@needs_java
def test_a_rollback_tree_on_scienceworld_recovers(store: Store) -> None:
    """The first episode focuses on the wrong thing (the simulator ends it as failed); the reflection
    rolls back to that step, and the branch, replayed on a reloaded world, follows the gold path."""
    gold = _gold_scienceworld("find-animal", 0)
    focus = next(i for i, a in enumerate(gold, 1) if a.startswith("focus on"))

    def reply(messages):
        if is_reflection(messages):
            return reflect(focus, f"focus on the animal: {gold[focus - 1]}")
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        if step == focus and not guided(messages):
            return act("focus on air")
        return act(gold[step - 1])

    env = ScienceWorldEnv()
    config = ExploreConfig(budget=2, reflect_every=100, grammar=False)
    run_id = Explorer(store, ScriptedBackend(reply_fn=reply), env, config).start(
        "scienceworld/find-animal/0", "s"
    )
    env.close()
    branches = store.branches(run_id)
    assert [b.outcome for b in branches] == ["failure", "success"] and branches[1].kind == "rollback"
    nodes = store.nodes(run_id)
    assert all("score" in n.info for n in nodes if n.step > 0)  # what the world reported is kept


@pytest.mark.skipif(
    shutil.which("chromedriver") is None, reason="no Chromium driver (make setup installs it)"
)
def test_miniwob_enter_text_is_judged_by_the_page() -> None:
    """The page as text, the element numbers as actions, and the task's JavaScript as the judge."""
    import re

    from engine.envs.web import MiniWoBEnv

    env = MiniWoBEnv()
    try:
        page = env.reset("miniwob/enter-text/3")
        word = re.search(r'Enter "([^"]+)"', page).group(1)
        field = re.search(r"\[(\d+)\] input_text", page).group(1)
        submit = re.search(r'\[(\d+)\] button "Submit"', page).group(1)
        missing = env.step(ParsedAction("click 999"))
        assert not missing.valid and "no element 999" in missing.feedback
        typed = env.step(ParsedAction(f"type {field} {word}"))
        assert typed.valid and not typed.done
        solved = env.step(ParsedAction(f"click {submit}"))
        assert solved.done and solved.success and solved.info["raw_reward"] > 0
        env.reset("miniwob/enter-text/3")
        env.step(ParsedAction(f"type {field} wrong"))
        failed = env.step(ParsedAction(f"click {submit}"))
        assert failed.done and not failed.success
        assert env.reset("miniwob/enter-text/3") == page  # the clicked Submit's focus is gone
        # the page's own 10-second limit must not end the episode
        time.sleep(11)
        env.step(ParsedAction(f"type {field} {word}"))
        slow = env.step(ParsedAction(f"click {submit}"))
        assert slow.success
    finally:
        env.close()
