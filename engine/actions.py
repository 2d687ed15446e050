"""Parsing model replies into actions and reflections, and the GBNF grammars that constrain them.

Reply format (verl-agent convention, documented in the README)::

    <think>a short thought</think>
    <action>the action</action>

Parsing is forgiving where intent is unambiguous (a missing ``</action>`` at the end of the reply,
code fences inside the action, surrounding prose) and strict where it is not (no ``<action>`` tag,
an empty action, several actions). A reply that does not parse becomes a ``ParsedAction`` with
``action=None`` and an ``error``; the environment reports it as an invalid action.

Reflection format::

    <think>what went wrong</think>
    <rollback>3</rollback>            (or: <rollback>none</rollback>)
    <summary>diagnosis and fix, one or two sentences</summary>
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.envs.base import ParsedAction
from engine.prompts import SUMMARY_HINT

MIN_SUMMARY_WORDS = 3  # small models copy placeholders ("…") or answer one word; that guides nothing

_THINK = re.compile(r"<think>(.*?)(?:</think>|(?=<action>)|$)", re.S | re.I)
_ACTION_OPEN = re.compile(r"<action>", re.I)
_ACTION_CLOSE = re.compile(r"</action>", re.I)
_FENCE = re.compile(r"^\s*```[\w+-]*[ \t]*\n(.*?)\n?```\s*$", re.S)


def strip_code_fence(text: str) -> str:
    """Remove one surrounding Markdown code fence, if the whole text is fenced."""
    match = _FENCE.match(text)
    return match.group(1) if match else text


def parse_action(reply: str) -> ParsedAction:
    """Parse one model reply into a ParsedAction (never raises)."""
    think_match = _THINK.search(reply)
    thought = think_match.group(1).strip() if think_match else ""
    opens = list(_ACTION_OPEN.finditer(reply))
    if not opens:
        return ParsedAction(None, thought, "no <action>…</action> tag in the reply")
    if len(opens) > 1:
        return ParsedAction(None, thought, f"{len(opens)} <action> tags in the reply; give exactly one")
    start = opens[0].end()
    close = _ACTION_CLOSE.search(reply, start)
    body = reply[start : close.start()] if close else reply[start:]
    body = strip_code_fence(body.strip("\n")).strip("\n")
    if not body.strip():
        return ParsedAction(None, thought, "the <action> tag is empty")
    return ParsedAction(body if "\n" in body.strip() else body.strip(), thought)


@dataclass(frozen=True)
class Reflection:
    """A parsed reflection: roll back to ``step`` with ``summary``, or no rollback (step None)."""

    step: int | None
    summary: str
    thought: str = ""
    error: str | None = None  # set when the reply did not parse; such a reflection spawns no branch

    @property
    def wants_rollback(self) -> bool:
        return self.error is None and self.step is not None


_ROLLBACK = re.compile(r"<rollback>\s*(.*?)\s*</rollback>", re.S | re.I)
_SUMMARY = re.compile(r"<summary>(.*?)(?:</summary>|$)", re.S | re.I)
_NO_ROLLBACK = {"none", "no", "no rollback", "null", "-", "0"}


def parse_reflection(reply: str, last_step: int) -> Reflection:
    """Parse a reflection reply; ``last_step`` is the number of steps taken so far (τ ≤ last_step)."""
    think_match = _THINK.search(reply)
    thought = think_match.group(1).strip() if think_match else ""
    rollback = _ROLLBACK.search(reply)
    summary_match = _SUMMARY.search(reply)
    summary = summary_match.group(1).strip() if summary_match else ""
    if not rollback:
        return Reflection(None, summary, thought, "no <rollback>…</rollback> tag in the reflection")
    value = rollback.group(1).strip().lower().removeprefix("step").strip()
    if value in _NO_ROLLBACK:
        return Reflection(None, summary, thought)
    if not value.isdigit():
        return Reflection(None, summary, thought, f"rollback step {value!r} is not a number or 'none'")
    step = int(value)
    if not 1 <= step <= last_step:
        return Reflection(None, summary, thought, f"rollback step {step} is outside 1..{last_step}")
    if not summary:
        return Reflection(None, summary, thought, "a rollback needs a non-empty <summary>")
    if len(re.findall(r"[^\W\d_]{2,}", summary)) < MIN_SUMMARY_WORDS or summary.lower() == SUMMARY_HINT:
        return Reflection(None, summary, thought, "the <summary> is too short to guide a new attempt")
    return Reflection(step, summary, thought)


# --- grammars -------------------------------------------------------------------------------


def _thought_rule(max_chars: int) -> str:
    # Bounding the thought guarantees the action comes before max_tokens runs out; no backticks,
    # so a model cannot start writing its code inside the thought.
    return f"thought ::= [^<`]{{0,{max_chars}}}"


def action_grammar(action_rule: str | None, max_thought_chars: int = 400) -> str:
    """GBNF for a whole reply: a bounded thought, then one action whose content follows ``action_rule``.

    ``action_rule`` is the environment's rule body for the action content; None allows any text
    without a ``<`` followed by ``/`` (so the action cannot close early or contain a closing tag).
    """
    body = action_rule or '( [^<] | "<" [^/] )*'
    return "\n".join(
        [
            'root ::= "<think>" thought "</think>" "\\n" "<action>" act "</action>"',
            _thought_rule(max_thought_chars),
            f"act ::= {body}",
        ]
    )


def reflection_grammar(allow_none: bool = True, max_thought_chars: int = 400) -> str:
    """GBNF for a reflection whose rollback step is a number, or ``none`` when allowed.

    The range 1..t is checked by parse_reflection (GBNF number ranges are clumsy).
    """
    step = '"none" | [1-9] [0-9]?' if allow_none else "[1-9] [0-9]?"
    return "\n".join(
        [
            'root ::= "<think>" thought "</think>" "\\n" "<rollback>" step "</rollback>" "\\n" '
            '"<summary>" summary "</summary>"',
            _thought_rule(max_thought_chars),
            f"step ::= {step}",
            # One or two sentences that start with a letter; small models otherwise copy "…" or ramble.
            "summary ::= [A-Za-z] [^<]{10,300}",
        ]
    )
