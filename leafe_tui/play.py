"""``leafe play``: a person (or a file of actions) plays a task and sees what the model would see."""

from __future__ import annotations

import json
import sys
import unicodedata
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from engine.envs import env_for_task
from engine.envs.base import ParsedAction
from engine.errors import SettingError
from engine.prompts import SYSTEM_PROMPT, observation_message


def load_actions(path: Path) -> list[str]:
    """Read a JSON list of action strings."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SettingError(f"no actions file at {path}") from None
    except json.JSONDecodeError as exc:
        raise SettingError(
            f"{path} is not JSON ({exc.msg} at line {exc.lineno}); expected a list of strings"
        ) from None
    except RecursionError:
        raise SettingError(f"{path} is nested too deeply to read; expected a list of strings") from None
    if not isinstance(data, list) or not all(isinstance(a, str) for a in data):
        raise SettingError(f"{path} must hold a JSON list of action strings")
    return data


def shown(text: str) -> Text:
    """Text that came from a program (its output is in observations), safe for the terminal: no Rich
    markup, and control characters other than newline and tab (escape sequences, carriage returns,
    bidirectional overrides) written as escapes instead of acting on the terminal."""
    out = []
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp"):
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
    return Text("".join(out))


def _read_action(console: Console, multiline: bool) -> str | None:
    """One action from the terminal; None at end of input.

    Free-text actions (code) span several lines and end with a line holding only '.'.
    """
    console.print("[bold]action>[/] " + ("(end with a line holding only '.')" if multiline else ""))
    lines: list[str] = []
    while line := sys.stdin.readline():
        line = line.rstrip("\n")
        if not multiline:
            return line
        if line == ".":
            return "\n".join(lines)
        lines.append(line)
    return "\n".join(lines) if lines else None


class PlaySession:
    """One episode of a task played by hand."""

    def __init__(self, task_id: str, *, tasks_file: Path | None = None) -> None:
        self.task_id = task_id
        self.env = env_for_task(task_id, tasks_file=tasks_file)

    def run(self, actions: list[str] | None, *, as_json: bool, show_prompt: bool, console: Console) -> None:
        observation = self.env.reset(self.task_id)
        record: dict[str, Any] = {"task": self.task_id, "observation": observation, "steps": []}
        if not as_json:
            if show_prompt:
                console.print(
                    Panel(SYSTEM_PROMPT.format(action_help=self.env.action_help), title="system prompt")
                )
            console.print(Panel(shown(observation_message(1, observation)["content"]), title="user"))
        queue = list(actions) if actions is not None else None
        step = 0
        while True:
            if queue is not None:
                if not queue:
                    break
                text = queue.pop(0)
            else:
                text = _read_action(console, multiline=self.env.free_text_action)
                if text is None:
                    break
            step += 1
            result = self.env.step(
                ParsedAction(text) if text.strip() else ParsedAction(None, error="empty action")
            )
            record["steps"].append(
                {
                    "step": step,
                    "action": text,
                    "observation": result.observation,
                    "feedback": result.feedback,
                    "reward": result.reward,
                    "valid": result.valid,
                    "done": result.done,
                    "success": result.success,
                }
            )
            if not as_json:
                style = "green" if result.success else ("red" if not result.valid else "white")
                console.print(
                    Panel(
                        shown(observation_message(step + 1, result.observation)["content"]),
                        title="user",
                        border_style=style,
                    )
                )
            if result.done:
                break
        if as_json:
            sys.stdout.write(json.dumps(record, indent=2) + "\n")
        else:
            outcome = "solved" if record["steps"] and record["steps"][-1]["success"] else "not solved"
            console.print(f"{self.task_id}: {outcome} after {step} steps")
