"""Reply parsing, reflection parsing, prompt layout and grammars."""

from __future__ import annotations

import pytest

from engine.actions import (
    action_grammar,
    parse_action,
    parse_reflection,
    reflection_grammar,
    strip_code_fence,
)
from engine.prompts import (
    GUIDANCE_HEADER,
    SUMMARY_HINT,
    Turn,
    guidance_by_step,
    reflection_messages,
    trajectory_messages,
)


@pytest.mark.parametrize(
    ("reply", "action", "thought"),
    [
        ("<think>go</think>\n<action>up</action>", "up", "go"),
        ("<think>go</think><action> Left </action>", "Left", "go"),
        ("Sure! <think>hmm</think> here: <action>down</action> done.", "down", "hmm"),
        ("<think>no closing tag at the end</think><action>right", "right", "no closing tag at the end"),
        ("<action>up</action>", "up", ""),
        ("<THINK>caps</THINK><ACTION>up</ACTION>", "up", "caps"),
    ],
)
def test_parse_action_accepts_clear_intent(reply: str, action: str, thought: str) -> None:
    parsed = parse_action(reply)
    assert parsed.error is None and parsed.action == action and parsed.thought == thought


def test_parse_action_keeps_code_indentation_and_strips_fences() -> None:
    code = "import sys\nfor line in sys.stdin:\n    print(line)"
    reply = f"<think>sum</think>\n<action>\n```python\n{code}\n```\n</action>"
    parsed = parse_action(reply)
    assert parsed.action == code


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        ("I would go up", "no <action>"),
        ("<think>x</think><action>  </action>", "empty"),
        ("<action>up</action><action>down</action>", "2 <action> tags"),
        ("", "no <action>"),
    ],
)
def test_parse_action_reports_why_a_reply_is_invalid(reply: str, error: str) -> None:
    parsed = parse_action(reply)
    assert parsed.action is None and error in parsed.error


def test_strip_code_fence_only_when_whole_text_is_fenced() -> None:
    assert strip_code_fence("```py\nx = 1\n```") == "x = 1"
    assert strip_code_fence("x = '```'") == "x = '```'"


@pytest.mark.parametrize(
    ("reply", "step", "summary", "error"),
    [
        (
            "<think>a</think><rollback>2</rollback><summary>push the box first</summary>",
            2,
            "push the box first",
            None,
        ),
        ("<rollback> step 3 </rollback><summary>read all of stdin</summary>", 3, "read all of stdin", None),
        ("<rollback>none</rollback><summary>fine</summary>", None, "fine", None),
        ("<rollback>None</rollback>", None, "", None),
        ("<rollback>9</rollback><summary>s</summary>", None, "s", "outside 1..4"),
        ("<rollback>two</rollback><summary>s</summary>", None, "s", "not a number"),
        ("<rollback>2</rollback>", None, "", "non-empty <summary>"),
        ("<rollback>2</rollback><summary>…</summary>", None, "…", "too short"),
        ("<rollback>2</rollback><summary>fix it</summary>", None, "fix it", "too short"),
        (f"<rollback>2</rollback><summary>{SUMMARY_HINT}</summary>", None, SUMMARY_HINT, "too short"),
        ("I think step 2 was wrong", None, "", "no <rollback>"),
    ],
)
def test_parse_reflection(reply: str, step: int | None, summary: str, error: str | None) -> None:
    reflection = parse_reflection(reply, last_step=4)
    assert reflection.step == step and reflection.summary == summary
    if error is None:
        assert reflection.error is None
    else:
        assert error in reflection.error and not reflection.wants_rollback


def test_trajectory_grows_by_appending_so_prefixes_are_shared() -> None:
    turns = [Turn("<action>up</action>", "moved"), Turn("<action>left</action>", "moved again")]
    short = trajectory_messages("help", "start", turns[:1])
    long = trajectory_messages("help", "start", turns)
    assert long[: len(short)] == short and len(long) == len(short) + 2
    assert long[-1]["content"].startswith("Observation before step 3:")


def test_guidance_appears_before_its_step_only() -> None:
    turns = [Turn("a", "o1"), Turn("b", "o2"), Turn("c", "o3")]
    messages = trajectory_messages("help", "start", turns, {3: ["use c"]})
    guided = [m for m in messages if GUIDANCE_HEADER in m["content"]]
    assert len(guided) == 1 and guided[0]["content"].startswith("Observation before step 3:")
    assert messages[:5] == trajectory_messages("help", "start", turns[:2])[:5]


def test_guidance_by_step_moves_cut_summaries_to_the_new_rollback_point() -> None:
    assert guidance_by_step([(3, "e1")]) == {3: ["e1"]}
    assert guidance_by_step([(3, "e1"), (5, "e2")]) == {3: ["e1"], 5: ["e2"]}
    assert guidance_by_step([(3, "e1"), (2, "e2")]) == {2: ["e1", "e2"]}


def test_reflection_request_extends_the_last_observation() -> None:
    trajectory = trajectory_messages("help", "start", [Turn("a", "o1")])
    messages = reflection_messages(trajectory, last_step=1, failed=True, done=True)
    assert messages[:-1] == trajectory[:-1]
    assert messages[-1]["content"].startswith(trajectory[-1]["content"])
    assert "must be redone" in messages[-1]["content"]
    periodic = reflection_messages(trajectory, last_step=1, failed=False, done=False)
    assert "answer none" in periodic[-1]["content"] and "answer none" not in messages[-1]["content"]


def test_grammars_name_their_parts() -> None:
    grammar = action_grammar('("up" | "down")', max_thought_chars=50)
    assert 'act ::= ("up" | "down")' in grammar and "{0,50}" in grammar
    assert '"none"' in reflection_grammar(allow_none=True)
    assert '"none"' not in reflection_grammar(allow_none=False)
