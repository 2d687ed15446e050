"""How steps and task statements read in the terminal: reflowed prose, code steps named by what changed."""

from __future__ import annotations

import pytest

from engine.envs.code import CodeEnv
from engine.envs.sokoban import SokobanEnv
from engine.envs.suite_loader import load_suite
from leafe_tui.display_text import program_change, reflow, step_summary
from leafe_tui.render import node_label


@pytest.mark.parametrize("task", [f"code/{p.id}" for p in load_suite()[:6]])
def test_suite_statements_reflow_into_one_line_per_paragraph(task: str) -> None:
    text = CodeEnv().reset(task)
    shown = reflow(text)
    statement = shown.split("\n\n")[1]  # the paragraph after the title
    assert "\n" not in statement and len(statement) > 100
    # every example block (input and output lines) is kept line for line
    for block in text.split("Example")[1:]:
        assert block.split("\n\n")[0] in shown
    assert shown.replace("\n", " ").split() == text.replace("\n", " ").split()  # only line breaks move


def test_code_and_grids_are_left_alone() -> None:
    assert reflow(CodeEnv().reset("code/humaneval/0")) == CodeEnv().reset("code/humaneval/0")
    sokoban = SokobanEnv().reset("sokoban/fixed-2")
    assert reflow(sokoban) == sokoban
    fenced = "```\n" + ("x = 1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9 + 10 + 11 + 12 + 13 + 14 + 15\n" * 2) + "```"
    assert reflow(fenced) == fenced


def test_code_steps_are_named_by_feedback_and_change() -> None:
    first = "from typing import *\n\ndef f(x):\n    return x\n"
    second = "from typing import *\n\ndef f(x):\n    y = x + 1\n    return y\n"
    assert program_change(first, None) == "3 lines"
    assert program_change(second, first) == "4 lines, +2 −1"
    assert program_change(first, first) == "3 lines, unchanged"
    summary = step_summary(second, "Wrong answer on example 1.\nInput: …", first)
    assert summary.startswith("Wrong answer on example 1.") and summary.endswith("4 lines, +2 −1")
    assert "from typing" not in summary
    node = {"step": 2, "action": second, "feedback": "Wrong answer on example 1.", "success": False}
    label = node_label(node | {"valid": True, "done": False}, previous_action=first).plain
    assert "Wrong answer on example 1." in label and "+2 −1" in label and "from typing" not in label
    assert step_summary("left", "You moved left.", None) == "left  You moved left."
