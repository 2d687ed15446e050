"""A GGUF model's own chat template and tokenizer: how leafe turns messages into prompt tokens.

The engine renders and tokenises prompts itself (rather than through llama-cpp-python's chat
handlers) so it knows exactly which tokens the model sees. The trainer and ``leafe dataset show``
use this same class, so the tokens a LoRA is trained on are the tokens the engine later evaluates.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import LeafeError

Message = dict[str, Any]


class TemplateError(LeafeError, ValueError):
    """The model has no usable chat template."""


class GgufChatTemplate:
    """Renders with the template in the GGUF metadata and tokenises with the model's vocabulary."""

    def __init__(self, llm: Any, name: str = "model") -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise TemplateError(f"{name} has no chat template in its GGUF metadata; leafe needs a chat model")
        model = llm._model
        eos_id, bos_id = llm.token_eos(), llm.token_bos()
        tokens = {
            "template": template,
            "eos_token": model.token_get_text(eos_id) if eos_id != -1 else "",
            "bos_token": model.token_get_text(bos_id) if bos_id != -1 else "",
        }
        self._prompt = Jinja2ChatFormatter(**tokens, add_generation_prompt=True)
        self._transcript = Jinja2ChatFormatter(**tokens, add_generation_prompt=False)
        self.llm = llm
        self.name = name

    @classmethod
    def from_gguf(cls, path: str | Path) -> GgufChatTemplate:
        """Only the vocabulary and metadata of the GGUF (no weights): well under a second."""
        from llama_cpp import Llama
        from llama_cpp._utils import suppress_stdout_stderr

        path = Path(path)
        with suppress_stdout_stderr(disable=False):  # llama.cpp logs a context warning even here
            llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
        return cls(llm, name=path.name)

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text; with ``add_generation_prompt`` it ends where the assistant's reply begins."""
        plain = [{"role": m["role"], "content": m["content"]} for m in messages]
        formatter = self._prompt if add_generation_prompt else self._transcript
        return formatter(messages=plain).prompt

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, special tokens parsed, no BOS added (the template writes its own)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def piece(self, token_id: int) -> str:
        """The vocabulary entry of one token (for special tokens: their name)."""
        return self.llm._model.token_get_text(token_id)

    def decode(self, token_ids: list[int]) -> str:
        """The text of a run of tokens, special tokens written out."""
        return self.llm.detokenize(token_ids, special=True).decode("utf-8", errors="replace")
