"""Text as a person reads it in the terminal (what the model saw is never changed, only shown).

- ``reflow``: task statements arrive hard-wrapped at the source's width; shown in a narrower pane,
  each hard break plus the pane's own soft wrap gives ragged lines. Prose paragraphs are joined so
  the pane wraps them once; code, examples, lists and grids keep their lines.
- ``step_summary``: a one-line name for a step. A code step's first line is nearly always the same
  (``from typing import *``), so it is named by its feedback and by how much the program changed
  since the step before.
"""

from __future__ import annotations

import difflib
import re

_KEEP_LINE = re.compile(r"^(\s|[-*+•|#>]|\d+[.)]\s|```)")


def _is_prose(line: str) -> bool:
    return bool(line.strip()) and not _KEEP_LINE.match(line) and " " in line.strip()


def _continues(line: str) -> bool:
    """Whether a line can be the rest of a wrapped sentence (a lone word like ``digits.`` can)."""
    stripped = line.strip()
    return bool(stripped) and not _KEEP_LINE.match(line) and (stripped[0].isalnum() or stripped[0] in "(\"'")


def reflow(text: str, wrapped_at: tuple[int, int] = (60, 100)) -> str:
    """Join hard-wrapped prose: a line joins the prose line before it when that one's length lies in
    ``wrapped_at`` (it ended because the source wrapped it at about that width, not because a
    sentence, a heading or a constraint ended; a longer line was never wrapped). Code fences,
    indented lines, lists and grids stay as they are."""
    out: list[str] = []
    in_fence = False
    joinable = False  # the last line written is long prose that the next prose line continues
    for line in text.split("\n"):
        if line.strip().startswith("```"):
            in_fence = not in_fence
        if joinable and not in_fence and _continues(line):
            out[-1] = out[-1].rstrip() + " " + line.strip()
        else:
            out.append(line)
        joinable = not in_fence and _is_prose(line) and wrapped_at[0] <= len(line.rstrip()) <= wrapped_at[1]
    return "\n".join(out)


def short_line(text: str, width: int = 70) -> str:
    """The first non-blank line of ``text``, cut to ``width`` with an ellipsis."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= width else line[: width - 1] + "…"


def program_change(action: str, previous: str | None) -> str:
    """``17 lines`` for a first program, ``17 lines, +3 −2 vs the step before`` for a revision."""
    lines = [line for line in action.splitlines() if line.strip()]
    size = f"{len(lines)} lines"
    if previous is None:
        return size
    before = [line for line in previous.splitlines() if line.strip()]
    added = removed = 0
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=before, b=lines, autojunk=False).get_opcodes():
        if tag in ("replace", "delete"):
            removed += i2 - i1
        if tag in ("replace", "insert"):
            added += j2 - j1
    if not added and not removed:
        return f"{size}, unchanged"
    return f"{size}, +{added} −{removed}"


def step_summary(
    action: str | None, feedback: str | None, previous_action: str | None, width: int = 90
) -> str:
    """What a step did, in one line: short actions as they are, programs by feedback and change."""
    if action is None:
        return "(unparsable reply)" + (f"  {short_line(feedback, width)}" if feedback else "")
    if "\n" not in action.strip():
        text = action.strip()
        return (text if len(text) <= width else text[: width - 1] + "…") + (
            f"  {short_line(feedback, 70)}" if feedback else ""
        )
    said = short_line(feedback or "", width - 30) if feedback else "no feedback"
    return f"{said}  · {program_change(action, previous_action)}"
