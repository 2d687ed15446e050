"""Chat examples as token ids with the loss mask: which tokens are trained and which are context.

A trained assistant turn is exactly what the engine makes the model generate: the reply text and
the end-of-turn token, after a prompt rendered with ``add_generation_prompt``. Its character span is
found by rendering the conversation before and after that turn with the model's own template, and
the text is tokenised piece by piece at those boundaries, so the mask never splits a token. The
boundaries sit at special tokens, where piecewise and whole tokenisation agree; ``tokenize_chat``
checks that and refuses an example where they would not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from engine.errors import LeafeError

Message = dict[str, Any]


class MaskError(LeafeError, ValueError):
    """The template does not render the conversation as a growing prefix, so no mask can be cut."""


class ChatTemplate(Protocol):
    name: str

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str: ...

    def encode(self, text: str) -> list[int]: ...

    def piece(self, token_id: int) -> str: ...

    def decode(self, token_ids: list[int]) -> str: ...


class HfChatTemplate:
    """The chat template and tokenizer of a Hugging Face checkpoint (for a user's own ``--base``)."""

    def __init__(self, hf_dir: str | Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(hf_dir)
        if not self.tokenizer.chat_template:
            raise MaskError(f"{hf_dir} has no chat template; leafe trains chat models")
        self.name = Path(hf_dir).name

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        return self.tokenizer.apply_chat_template(
            plain, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def piece(self, token_id: int) -> str:
        return self.tokenizer.convert_ids_to_tokens(token_id)

    def decode(self, token_ids: list[int]) -> str:
        return self.tokenizer.decode(token_ids, skip_special_tokens=False)


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    trained: list[bool]

    @property
    def trained_count(self) -> int:
        return sum(self.trained)

    def runs(self) -> list[tuple[bool, int, int]]:
        """Maximal runs of tokens with the same flag, as (trained, start, end) with end exclusive."""
        out: list[tuple[bool, int, int]] = []
        for index, flag in enumerate(self.trained):
            if out and out[-1][0] == flag:
                out[-1] = (flag, out[-1][1], index + 1)
            else:
                out.append((flag, index, index + 1))
        return out

    def spans(self) -> list[tuple[int, int]]:
        """Runs of trained tokens as [start, end) index pairs."""
        return [(start, end) for flag, start, end in self.runs() if flag]


def trained_char_spans(
    messages: Sequence[Message], template: ChatTemplate
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its trained assistant turns."""
    full = template.render(messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or not message.get("training"):
            continue
        prompt = template.render(messages[:index], add_generation_prompt=True)
        turn = template.render(messages[: index + 1], add_generation_prompt=False)
        if not (full.startswith(turn) and turn.startswith(prompt)):
            raise MaskError(f"{template.name}: the chat template does not render turn {index} as a prefix")
        end = len(turn.rstrip())  # the newline after the end-of-turn token is never generated
        if end <= len(prompt):
            raise MaskError(f"turn {index} is empty")
        spans.append((len(prompt), end))
    return full, spans


def tokenize_chat(messages: Sequence[Message], template: ChatTemplate) -> TokenizedExample:
    """Token ids of the whole conversation and, per token, whether the loss is taken on it."""
    full, spans = trained_char_spans(messages, template)
    ids: list[int] = []
    trained: list[bool] = []
    cursor = 0
    for start, end in [*spans, (len(full), len(full))]:
        for text, flag in ((full[cursor:start], False), (full[start:end], True)):
            if text:
                piece = template.encode(text)
                ids.extend(piece)
                trained.extend([flag] * len(piece))
        cursor = end
    if ids != template.encode(full):
        raise MaskError(f"{template.name}: tokenising at the turn boundaries differs from the whole text")
    return TokenizedExample(ids, trained)
