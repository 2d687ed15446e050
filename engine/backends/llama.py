"""The in-process llama.cpp backend (llama-cpp-python), the engine every real run uses.

Prompts are rendered with the chat template stored in the GGUF and tokenised here, so the backend
knows exactly how many prompt tokens llama.cpp will reuse from its KV cache: llama-cpp-python keeps
the longest common token prefix of consecutive calls, which makes each step of a trajectory cost
only its new tokens. A branch starts after the model has worked on other trajectories, so its
shared history is no longer in the context: ``save_prefix`` copies the KV cells of that history
(only the KV of one sequence, megabytes, not the full ``save_state`` with its logits) when the
branch is queued, and ``restore_prefix`` puts them back when the branch runs.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.backends.base import BackendError, Completion, Message, ModelBackend, common_prefix_length
from engine.chat_template import GgufChatTemplate, TemplateError

MIN_PREFIX_TO_SAVE = 16  # below this, re-evaluating is cheaper than keeping a copy


@dataclass(frozen=True)
class SavedPrefix:
    """The KV state of one token prefix of sequence 0."""

    tokens: tuple[int, ...]
    kv: bytes


class LlamaCppBackend(ModelBackend):
    """A GGUF model loaded in this process through llama-cpp-python."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        n_ctx: int = 8192,
        n_threads: int | None = None,
        reuse_prefix: bool = True,
        lora_path: str | Path | None = None,
    ) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:  # pragma: no cover - depends on the installation
            raise BackendError(
                f"llama-cpp-python is not installed ({exc}); run `make run` to set up"
            ) from exc
        path = Path(model_path)
        if not path.is_file():
            raise BackendError(f"model file {path} does not exist")
        from llama_cpp._utils import suppress_stdout_stderr

        try:
            # With an adapter llama.cpp logs a line per adapted tensor whatever ``verbose`` says.
            with suppress_stdout_stderr(disable=lora_path is None):
                self.llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=n_threads or os.cpu_count() or 1,
                    lora_path=str(lora_path) if lora_path else None,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            raise BackendError(f"llama.cpp could not load {path.name}: {exc}") from exc
        try:
            self.template = GgufChatTemplate(self.llm, name=path.name)
        except TemplateError as exc:
            raise BackendError(str(exc)) from exc
        self.n_ctx = n_ctx
        self.reuse_prefix = reuse_prefix
        self.name = f"llama.cpp:{path.name}"
        self.model_path = path

    # --- prompts ---------------------------------------------------------------------------
    def tokens(self, messages: list[Message]) -> list[int]:
        """The prompt tokens of ``messages`` exactly as this backend evaluates them."""
        return self.template.encode(self.template.render(messages))

    def _cached_prefix(self, tokens: list[int]) -> int:
        """How many leading prompt tokens llama-cpp-python will take from the KV cache (its own rule)."""
        if self.llm.n_tokens == 0:
            return 0
        shared = common_prefix_length(self.llm._input_ids, tokens)
        return shared - 1 if shared == len(tokens) else shared

    # --- calls -----------------------------------------------------------------------------
    def complete(
        self,
        messages: list[Message],
        *,
        temperature: float,
        max_tokens: int,
        seed: int,
        grammar: str | None = None,
    ) -> Completion:
        from llama_cpp import LlamaGrammar

        tokens = self.tokens(messages)
        room = self.n_ctx - len(tokens)
        if room < 32:
            raise BackendError(
                f"the prompt has {len(tokens)} tokens and the context holds {self.n_ctx}: raise --n-ctx"
            )
        if not self.reuse_prefix:
            self.llm.reset()
        cached = self._cached_prefix(tokens)
        started = time.perf_counter()
        result = self.llm.create_completion(
            tokens,
            max_tokens=min(max_tokens, room),
            temperature=temperature,
            seed=seed,
            grammar=LlamaGrammar.from_string(grammar, verbose=False) if grammar else None,
        )
        seconds = time.perf_counter() - started
        usage = result["usage"]
        return Completion(
            text=result["choices"][0]["text"],
            prompt_tokens=usage["prompt_tokens"],
            cached_tokens=cached,
            generated_tokens=usage["completion_tokens"],
            seconds=seconds,
        )

    # --- prefix states ---------------------------------------------------------------------
    def save_prefix(self, messages: list[Message]) -> SavedPrefix | None:
        if not self.reuse_prefix:
            return None
        import llama_cpp

        tokens = self.tokens(messages)
        shared = min(common_prefix_length(self.llm._input_ids, tokens), len(tokens) - 1)
        if shared < MIN_PREFIX_TO_SAVE:
            return None
        # Drop the cells after the shared prefix first so only the prefix is copied; the
        # trajectory they belonged to has ended (the explorer saves prefixes when a branch ends).
        self.llm._ctx.kv_cache_seq_rm(0, shared, -1)
        self.llm.n_tokens = shared
        self.llm._requires_eval = True
        ctx = self.llm._ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = llama_cpp.llama_state_seq_get_data(ctx, buffer, size, 0)
        if written == 0:
            return None
        return SavedPrefix(tuple(tokens[:shared]), bytes(buffer)[:written])

    def restore_prefix(self, handle: Any) -> None:
        if not isinstance(handle, SavedPrefix) or not self.reuse_prefix:
            return
        import llama_cpp

        self.llm._ctx.kv_cache_clear()
        self.llm.n_tokens = 0
        self.llm._requires_eval = True
        buffer = (ctypes.c_uint8 * len(handle.kv)).from_buffer_copy(handle.kv)
        if llama_cpp.llama_state_seq_set_data(self.llm._ctx.ctx, buffer, len(handle.kv), 0) == 0:
            return  # could not load: the next call simply evaluates the whole prompt
        n = len(handle.tokens)
        self.llm.input_ids[:n] = handle.tokens
        self.llm.n_tokens = n

    def close(self) -> None:
        self.llm.close()
