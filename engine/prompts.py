"""The prompts the agent sees: the acting conversation and the reflection request.

Every prompt of a trajectory is one growing chat (system, first observation, then alternating
assistant replies and observations), so consecutive model calls share their token prefix and the
backend's KV cache makes each step cost only its new tokens. Experience summaries are inserted at
the rollback step, never earlier, so a branch shares the whole history before τ with its parent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Message = dict[str, str]

SYSTEM_PROMPT = """\
You are an agent that solves a task by interacting with an environment, one step at a time.
Every reply has exactly two parts: a short thought, then one action:
<think>your reasoning, at most a few sentences</think>
<action>your action</action>
{action_help}"""

# The placeholder of the summary in the reflection format; a reply that only copies it is not a summary.
SUMMARY_HINT = "what went wrong and what to do instead"

GUIDANCE_HEADER = "Experience from an earlier attempt at this task (use it to avoid the same mistake):"
OBSERVATION_TEMPLATE = "Observation before step {step}:\n{observation}"


@dataclass(frozen=True)
class PromptTexts:
    """The texts an acting prompt is made of, as rendered for one run (stored with it).

    A dataset is rebuilt from these, not from today's code: a later edit to a prompt never
    silently changes what is distilled from an old run.
    """

    system: str
    observation: str = OBSERVATION_TEMPLATE
    guidance_header: str = GUIDANCE_HEADER

    @classmethod
    def for_env(cls, action_help: str) -> PromptTexts:
        return cls(system=SYSTEM_PROMPT.format(action_help=action_help))

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PromptTexts:
        data = json.loads(text)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


REFLECTION_PROMPT = """\
Reflection. {situation}
Look back at steps 1 to {last_step} and the feedback each one got, and find the earliest step where \
you went wrong. Then write an experience summary for your next attempt from that step: what went \
wrong (refer to the feedback) and what to do instead, in one or two sentences. The environment will \
be rolled back to just before that step, and you will continue from there with your summary.
{none_rule}
Answer in exactly this format, where N is {step_hint}:
<think>your analysis</think>
<rollback>N</rollback>
<summary>{summary_hint}</summary>"""


@dataclass(frozen=True)
class Turn:
    """One past step of a trajectory as the model saw it: its raw reply and the observation after it."""

    reply: str
    observation: str


def observation_message(
    step: int, observation: str, guidance: Sequence[str] = (), texts: PromptTexts | None = None
) -> Message:
    """The user message shown before ``step``; guidance (experience summaries) goes at its end."""
    template = texts.observation if texts else OBSERVATION_TEMPLATE
    header = texts.guidance_header if texts else GUIDANCE_HEADER
    text = template.format(step=step, observation=observation)
    if guidance:
        text += "\n\n" + header + "\n" + "\n".join(f"- {g}" for g in guidance)
    return {"role": "user", "content": text}


def trajectory_messages(
    action_help: str,
    first_observation: str,
    turns: Sequence[Turn],
    guidance: Mapping[int, Sequence[str]] | None = None,
    *,
    texts: PromptTexts | None = None,
) -> list[Message]:
    """The chat that asks for step ``len(turns) + 1``.

    ``guidance`` maps a step number to the summaries shown just before that step; ``texts`` are a
    run's recorded prompt texts (default: today's, for ``action_help``).
    """
    guidance = guidance or {}
    texts = texts or PromptTexts.for_env(action_help)
    messages: list[Message] = [
        {"role": "system", "content": texts.system},
        observation_message(1, first_observation, guidance.get(1, ()), texts),
    ]
    for index, turn in enumerate(turns, start=1):
        messages.append({"role": "assistant", "content": turn.reply})
        messages.append(observation_message(index + 1, turn.observation, guidance.get(index + 1, ()), texts))
    return messages


def reflection_messages(trajectory: list[Message], last_step: int, failed: bool, done: bool) -> list[Message]:
    """The trajectory chat followed by the reflection request.

    The acting chat ends with the observation before the next step; the request is appended to
    that same user message so the cached prefix stays intact.
    """
    if failed:
        situation = "The episode has ended without solving the task."
    elif done:
        situation = "The episode has ended."
    else:
        situation = f"Periodic check after {last_step} steps: the task is not solved yet."
    if failed:
        none_rule, step_hint = "The task is not solved, so some step must be redone.", "that step's number"
    else:
        none_rule, step_hint = "If every step so far was right, answer none.", "that step's number, or none"
    request = REFLECTION_PROMPT.format(
        situation=situation,
        last_step=last_step,
        none_rule=none_rule,
        step_hint=step_hint,
        summary_hint=SUMMARY_HINT,
    )
    last = trajectory[-1]
    return [*trajectory[:-1], {"role": "user", "content": last["content"] + "\n\n" + request}]


def chain_guidance(branches: Sequence[Any]) -> dict[int, list[str]]:
    """``guidance_by_step`` of a branch chain (oldest first): its rollback branches' summaries as shown."""
    return guidance_by_step(
        [
            (b.rollback_step, b.effective_summary or "")
            for b in branches
            if b.kind == "rollback" and b.rollback_step is not None
        ]
    )


def guidance_by_step(chain: Sequence[tuple[int, str]]) -> dict[int, list[str]]:
    """Where each experience summary of a branch chain is shown.

    ``chain`` lists (rollback step τ, summary) from the oldest ancestor branch to the newest. A
    summary is shown before its τ and stays there for the rest of the branch; when a later branch
    rolls back to a step at or before an earlier summary, that summary moves to the new τ so the
    guidance is never lost.
    """
    placed: dict[int, list[str]] = {}
    for step, summary in chain:
        carried = [s for pos in sorted(placed) if pos >= step for s in placed[pos]]
        placed = {pos: items for pos, items in placed.items() if pos < step}
        placed[step] = [*carried, summary]
    return placed
