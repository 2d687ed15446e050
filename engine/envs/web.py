"""MiniWoB++ (Liu et al. 2018, MIT): small web tasks in a real headless Chromium, leafe's stand-in
for WebShop (whose data cannot be had here and is not free to use).

Task ids are ``miniwob/TASK/SEED``: the seed fixes the page the task generates. The page is shown
to the model as text: the instruction, then one line per element that has text or can be acted on,
indented by nesting, each with its number (``[12] button "Submit"``). Actions name those numbers:
``click 12`` and ``type 7 some text`` (focus the element, then type). The task's own JavaScript
judges the episode; success is a positive raw reward. Rollback is a reset with the same seed and a
replay of the actions (45-120 ms a step here).

The browser is Debian's ``chromium`` and ``chromium-driver`` (``make`` installs them where it can),
started at the first reset, one per environment object, offline (the task pages are files in the
package).
"""

from __future__ import annotations

import os
from typing import Any

from engine.envs.base import Environment, ParsedAction, StepResult, Task, TaskNotFound
from engine.envs.external import require_program, world_class
from engine.errors import LeafeError

# Tasks a text agent can do with clicks and typing (no drawing, dragging or pixel reading).
TASKS = (
    "click-button",
    "click-button-sequence",
    "click-checkboxes",
    "click-collapsible",
    "click-dialog",
    "click-link",
    "click-option",
    "click-tab",
    "click-test",
    "click-test-2",
    "choose-list",
    "enter-password",
    "enter-text",
    "enter-text-2",
    "focus-text",
    "focus-text-2",
    "login-user",
    "navigate-tree",
    "use-autocomplete",
)
SEEDS = range(100)
NO_TIME_LIMIT = (
    "if (core.EP_TIMER !== null) { clearTimeout(core.EP_TIMER);"
    " core.EP_TIMER = setTimeout(function () {}, 2000000000); } core.clearTimer();"
)
_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromedriver")
_SHOWN_TAGS = {
    "input_text",
    "input_password",
    "input_checkbox",
    "input_radio",
    "button",
    "a",
    "select",
    "option",
}


def _parse(task_id: str) -> tuple[str, int]:
    parts = task_id.split("/")
    if len(parts) != 3 or parts[0] != MiniWoBEnv.name or not parts[2].isdigit():
        raise TaskNotFound(f"MiniWoB task ids look like miniwob/TASK/SEED, not {task_id!r}")
    if parts[1] not in TASKS:
        raise TaskNotFound(f"unknown MiniWoB task {parts[1]!r}; known: {', '.join(TASKS)}")
    seed = int(parts[2])
    if seed not in SEEDS:
        raise TaskNotFound(f"MiniWoB seeds run from 0 to {SEEDS[-1]}, not {seed}")
    return parts[1], seed


def render_page(observation: dict[str, Any]) -> str:
    """The instruction and the page's elements with text or an action, indented by nesting."""
    elements = list(observation.get("dom_elements") or ())
    parent = {e["ref"]: e["parent"] for e in elements}

    def depth(ref: int) -> int:
        d = 0
        while parent.get(ref) and d < 20:
            ref, d = parent[ref], d + 1
        return d

    lines = []
    for e in elements:
        text, tag, value = (e["text"] or "").strip(), e["tag"], (e["value"] or "").strip()
        if not text and tag not in _SHOWN_TAGS and not tag.startswith("input"):
            continue
        if tag in ("body", "html", "script", "style"):
            continue
        line = f"{'  ' * max(0, depth(e['ref']) - 2)}[{e['ref']}] {tag}"
        if text:
            line += f' "{" ".join(text.split())[:80]}"'
        if value and tag.startswith("input"):
            line += f' value="{value[:40]}"'
        flags = e.get("flags")
        if flags is not None and int(flags[0]):
            line += " (focused)"
        lines.append(line)
    return f"Task: {observation.get('utterance', '')}\nPage:\n" + "\n".join(lines)


class MiniWoBEnv(Environment):
    """A MiniWoB++ task in headless Chromium, acted on by element number."""

    name = "miniwob"
    max_steps = 10
    action_help = (
        'The page lists its elements as [N] tag "text". Reply with one action: click N (click '
        "element N), or type N TEXT (focus element N and type TEXT). Follow the task's instruction; "
        "the episode ends when the task is submitted or judged."
    )

    def __init__(self) -> None:
        self._env: Any = None
        self._task: str | None = None
        self._steps = 0
        self._refs: set[int] = set()  # the element numbers on the page now

    def tasks(self) -> list[Task]:
        return [Task(f"{self.name}/{t}/{s}", self.name, f"{t} (seed {s})") for t in TASKS for s in SEEDS]

    def task(self, task_id: str) -> Task:
        name, seed = _parse(task_id)
        return Task(task_id, self.name, f"{name} (seed {seed})")

    def action_grammar(self) -> str:
        return '("click " [0-9]{1,4}) | ("type " [0-9]{1,4} " " [a-zA-Z0-9 ,.@\'-]{1,60})'

    def example_actions(self, task_id: str) -> list[str]:
        return ["click 4", "type 5 hello", "click 999", "click 6"]

    def _browser(self, task: str) -> Any:
        if self._env is not None and self._task == task:
            return self._env
        if self._env is not None:
            self._env.close()
            self._env = None
        require_program("chromedriver", "MiniWoB (Chromium)", "chromium chromium-driver")
        os.environ.setdefault("MINIWOB_CHROME_BINARY", _CHROMIUM[0])
        os.environ.setdefault("MINIWOB_CHROMEDRIVER", _CHROMIUM[1])
        os.environ.setdefault("SE_OFFLINE", "true")  # Selenium must not look for a driver online
        environment = world_class("miniwob.environment", "MiniWoBEnvironment", "miniwob")
        self._env = environment(subdomain=task, action_space_config="all_supported")
        self._task = task
        return self._env

    def reset(self, task_id: str, seed: int = 0) -> str:
        del seed  # the task id's seed fixes the page
        name, page_seed = _parse(task_id)
        env = self._browser(name)
        # Focus outlives the page's own reset (a clicked Submit stays focused): clear it first, so a
        # reset always reads the same.
        env.instance.driver.execute_script("if (document.activeElement) document.activeElement.blur();")
        observation, _ = env.reset(seed=page_seed)
        # The page ends its episode after 10 s of wall-clock time; a model on a CPU thinks longer than
        # that, and success must not depend on its speed: the timer is replaced by one that never
        # fires (endEpisode needs a live timer id to record the reward).
        env.instance.driver.execute_script(NO_TIME_LIMIT)
        self._steps = 0
        self._refs = {int(e["ref"]) for e in observation.get("dom_elements") or ()}
        return render_page(observation)

    def step(self, action: ParsedAction) -> StepResult:
        if self._env is None:
            raise LeafeError("reset the MiniWoB environment before stepping it")
        self._steps += 1
        out_of_steps = self._steps >= self.max_steps
        command, problem = self._command(action)
        if problem is not None:
            feedback = f"Invalid action: {problem}. Reply with click N or type N TEXT."
            return StepResult(feedback, 0.0, out_of_steps, False, False, feedback, {"recognised": False})
        observation, reward, done, _, info = self._env.step(command)
        self._refs = {int(e["ref"]) for e in observation.get("dom_elements") or ()}
        raw = float(info.get("raw_reward", reward)) if isinstance(info, dict) else float(reward)
        success = bool(done) and raw > 0
        feedback = (
            ("Task solved." if success else "Task over: not solved.") if done else "Done; the page now reads:"
        )
        text = feedback if done else f"{feedback}\n{render_page(observation)}"
        return StepResult(
            text,
            raw if done else 0.0,
            bool(done) or out_of_steps,
            success,
            True,
            feedback,
            {"raw_reward": raw},
        )

    def _command(self, action: ParsedAction) -> tuple[Any, str | None]:
        from miniwob.action import ActionTypes

        if action.error is not None or not (action.action or "").strip():
            return None, " ".join((action.error or "no action was given").split())
        words = action.action.strip().split(maxsplit=2)
        if len(words) >= 2 and words[1].isdigit() and int(words[1]) not in self._refs:
            return None, f"there is no element {words[1]} on the page"
        if len(words) >= 2 and words[0].lower() == "click" and words[1].isdigit():
            return self._env.create_action(ActionTypes.CLICK_ELEMENT, ref=int(words[1])), None
        if len(words) == 3 and words[0].lower() == "type" and words[1].isdigit():
            return self._env.create_action(
                ActionTypes.FOCUS_ELEMENT_AND_TYPE_TEXT, ref=int(words[1]), text=words[2]
            ), None
        shown = action.action.strip()[:40]
        return None, f"{shown!r} is not click N or type N TEXT"

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None
