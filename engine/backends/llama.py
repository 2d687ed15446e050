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
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from engine.backends.base import BackendError, Completion, Message, ModelBackend, common_prefix_length
from engine.chat_template import GgufChatTemplate, TemplateError
from engine.errors import SettingError

if TYPE_CHECKING:
    from engine.specs import ModelSpec

MIN_PREFIX_TO_SAVE = 16  # below this, re-evaluating is cheaper than keeping a copy
MIN_N_CTX = 256  # below this not even the system prompt fits

MIN_REPLY_ROOM = 32  # tokens the context must keep free for a reply


def reply_room(tokens: list[int], n_ctx: int) -> int:
    """How many tokens a reply may take after ``tokens`` in a context of ``n_ctx``; BackendError
    when the prompt leaves too little."""
    room = n_ctx - len(tokens)
    if room < MIN_REPLY_ROOM:
        raise BackendError(
            f"the prompt has {len(tokens)} tokens and the context holds {n_ctx}: raise --n-ctx"
        )
    return room


# --- GGUF headers ----------------------------------------------------------------------------
# llama.cpp crashes (SIGSEGV) on an adapter file that is not a LoRA GGUF, so leafe reads the header
# itself first. The format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
GGUF_MAGIC = b"GGUF"
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4  # GGML_MAX_DIMS
# ggml tensor types: (bytes per block, elements per block). Types missing here are not size-checked.
_TYPE_SIZES = {
    0: (4, 1),  # F32
    1: (2, 1),  # F16
    2: (18, 32),  # Q4_0
    3: (20, 32),  # Q4_1
    6: (22, 32),  # Q5_0
    7: (24, 32),  # Q5_1
    8: (34, 32),  # Q8_0
    24: (1, 1),  # I8
    25: (2, 1),  # I16
    26: (4, 1),  # I32
    27: (8, 1),  # I64
    28: (8, 1),  # F64
    30: (2, 1),  # BF16
}


class _Truncated(Exception):
    """The file ended inside its header."""


class _Damaged(Exception):
    """The header holds something no GGUF writer writes."""


@dataclass(frozen=True)
class GgufHeader:
    """What leafe needs from a GGUF header: its version, scalar and string metadata, and its size."""

    version: int
    metadata: dict[str, Any] = field(default_factory=dict)  # arrays are skipped
    tensor_count: int = 0
    needed_bytes: int = 0  # the file size its tensor table asks for


class _Reader:
    """Bounded little-endian reads: reading past the end of the file raises _Truncated."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self.file, self.size = file, size

    def read(self, n: int) -> bytes:
        if n > self.size - self.file.tell():
            raise _Truncated
        return self.file.read(n)

    def scalar(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.read(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.read(self.scalar("<Q")).decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        """One metadata value; arrays are skipped (None)."""
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind != _ARRAY:
            raise _Damaged(f"unknown metadata type {kind}")
        item, count = self.scalar("<I"), self.scalar("<Q")
        if item in _SCALARS:
            self.read(struct.calcsize(_SCALARS[item]) * count)
        else:
            for _ in range(count):
                self.value(item)
        return None


def read_gguf_header(path: Path) -> GgufHeader:
    """The header of a GGUF file. Raises ValueError in plain words for anything else (empty,
    another format, an old GGUF version, a header cut short or damaged)."""
    size = path.stat().st_size
    if size == 0:
        raise SettingError(f"{path.name} is empty")
    with path.open("rb") as file:
        reader = _Reader(file, size)
        if size < 4 or reader.read(4) != GGUF_MAGIC:
            raise SettingError(f"{path.name} is not a GGUF file")
        try:
            version = reader.scalar("<I")
            if version not in (2, 3):
                raise _Damaged(f"it is GGUF version {version}; llama.cpp reads versions 2 and 3")
            tensors, entries = reader.scalar("<Q"), reader.scalar("<Q")
            metadata = {}
            for _ in range(entries):
                key = reader.string()
                metadata[key] = reader.value(reader.scalar("<I"))
            needed = _tensor_table_end(reader, tensors, int(metadata.get("general.alignment") or 32))
        except _Truncated:
            raise SettingError(f"{path.name} is truncated: it ends inside its GGUF header") from None
        except (_Damaged, struct.error, OverflowError, RecursionError) as exc:
            raise SettingError(f"{path.name} has a damaged GGUF header ({exc})") from None
    return GgufHeader(version, metadata, tensors, needed)


def _tensor_table_end(reader: _Reader, tensors: int, alignment: int) -> int:
    """Where the last tensor's data ends, as the tensor table says (the file must be at least that long)."""
    end = 0
    for _ in range(tensors):
        reader.string()
        dims = reader.scalar("<I")
        if dims > _MAX_DIMS:
            raise _Damaged(f"a tensor with {dims} dimensions")
        shape = [reader.scalar("<Q") for _ in range(dims)]
        kind, offset = reader.scalar("<I"), reader.scalar("<Q")
        block_bytes, block_items = _TYPE_SIZES.get(kind, (0, 1))
        items = 1
        for n in shape:
            items *= n
        end = max(end, offset + items // block_items * block_bytes)
    start = reader.file.tell()
    start += -start % max(alignment, 1)
    return start + end


def check_lora_adapter(path: str | Path) -> None:
    """Raise BackendError unless ``path`` is a whole GGUF LoRA adapter (what llama.cpp can load safely)."""
    path = Path(path)
    try:
        header = read_gguf_header(path)
    except OSError as exc:
        raise BackendError(f"cannot read the adapter {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BackendError(f"{exc}; an adapter must be a GGUF LoRA adapter file") from None
    kind = header.metadata.get("general.type")
    if kind != "adapter":
        what = f"a GGUF {kind}" if isinstance(kind, str) else "a GGUF file that does not say it is an adapter"
        raise BackendError(f"{path.name} is {what}, not a LoRA adapter")
    if header.metadata.get("adapter.type") != "lora":
        raise BackendError(f"{path.name} is a {header.metadata.get('adapter.type')!r} adapter, not a LoRA")
    if header.tensor_count == 0:
        raise BackendError(f"{path.name} holds no tensors")
    size = path.stat().st_size
    if size < header.needed_bytes:
        raise BackendError(
            f"{path.name} is truncated: its tensors need {header.needed_bytes} bytes and the file has {size}"
        )


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
        core_group: str | None = None,
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
        if n_ctx < MIN_N_CTX:
            raise BackendError(f"a context of {n_ctx} tokens is too small: it must hold at least {MIN_N_CTX}")
        if lora_path is not None:
            check_lora_adapter(lora_path)
        from llama_cpp._utils import suppress_stdout_stderr

        from engine.cores import CoreShare

        # Without an explicit count, this model takes its fair share of the cores, re-read before
        # every call: other leafe model processes may start or end meanwhile (engine/cores.py).
        self.share = CoreShare("llama.cpp", path.name, group=core_group) if n_threads is None else None
        self.threads = n_threads or self.share.threads()  # type: ignore[union-attr]
        try:
            # With an adapter llama.cpp logs a line per adapted tensor whatever ``verbose`` says.
            with suppress_stdout_stderr(disable=lora_path is None):
                self.llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_threads=self.threads,
                    n_threads_batch=self.threads,
                    lora_path=str(lora_path) if lora_path else None,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            self._release_cores()
            raise BackendError(f"llama.cpp could not load {path.name}: {exc}") from exc
        try:
            self.template = GgufChatTemplate(self.llm, name=path.name)
        except TemplateError as exc:
            self._release_cores()
            raise BackendError(str(exc)) from exc
        self.n_ctx = n_ctx
        self.reuse_prefix = reuse_prefix
        self.name = f"llama.cpp:{path.name}"
        self.model_path = path

    @classmethod
    def takes_concurrent_calls(cls, spec: ModelSpec) -> bool:
        return int(spec.options.get("slots", 1)) > 1  # then it opens as the batched engine

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ModelBackend:  # type: ignore[override]
        """Load the spec's model (a known name, pulled when missing, or a GGUF path) and adapter;
        with the option ``slots`` > 1, the batched engine that decodes that many calls at once."""
        from engine.models import DEFAULT_MODEL, ModelError, resolve_model

        if int(spec.options.get("slots", 1)) > 1:
            from engine.backends.llama_batched import BatchedLlamaBackend

            return BatchedLlamaBackend.from_spec(spec)

        try:
            path = resolve_model(spec.model or DEFAULT_MODEL)
        except ModelError as exc:
            raise BackendError(str(exc)) from None
        return cls(
            path,
            n_ctx=spec.n_ctx,
            reuse_prefix=spec.cache,
            lora_path=spec.adapter,
            core_group=spec.options.get("core_group"),
        )

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
        tokens = self.tokens(messages)
        room = reply_room(tokens, self.n_ctx)
        if not self.reuse_prefix:
            self.llm.reset()
        self._fit_threads()
        cached = self._cached_prefix(tokens)
        started = time.perf_counter()
        if grammar:
            text, generated = self._complete_checked(
                tokens, cached, temperature, min(max_tokens, room), seed, grammar
            )
        else:
            result = self.llm.create_completion(
                tokens, max_tokens=min(max_tokens, room), temperature=temperature, seed=seed
            )
            text, generated = result["choices"][0]["text"], result["usage"]["completion_tokens"]
        return Completion(
            text=text,
            prompt_tokens=len(tokens),
            cached_tokens=cached,
            generated_tokens=generated,
            seconds=time.perf_counter() - started,
        )

    def _complete_checked(
        self, tokens: list[int], cached: int, temperature: float, max_tokens: int, seed: int, grammar: str
    ) -> tuple[str, int]:
        """A grammar-constrained reply sampled check-first (``engine.backends.check_first``), with
        the same prefix reuse as llama-cpp-python's own generation: the cached prefix stays, the rest of
        the prompt is evaluated, and the context then holds the prompt and the reply."""
        import llama_cpp

        from engine.backends.check_first import CheckFirstSampler

        llm = self.llm
        vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
        try:
            sampler = CheckFirstSampler(vocab, temperature, seed, grammar)
        except ValueError as exc:
            raise BackendError(str(exc)) from None
        if cached > 0 and llm._ctx.kv_cache_seq_rm(-1, cached, -1):
            llm.n_tokens = cached
        else:
            llm.reset()
        pending, generated = tokens[llm.n_tokens :], []
        try:
            while True:
                try:
                    llm.eval(pending)
                except RuntimeError as exc:  # a failed llama_decode
                    raise BackendError(f"llama.cpp could not decode: {exc}") from None
                token = sampler.pick(llm._ctx.ctx, -1)
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                generated.append(token)
                if len(generated) >= max_tokens:
                    break
                pending = [token]
        finally:
            sampler.free()
        return self.template.decode(generated), len(generated)

    # --- prefix states ---------------------------------------------------------------------
    def save_prefix(self, messages: list[Message], *, live: bool = False) -> SavedPrefix | None:
        """Copy the KV cells of the prefix ``messages`` share with the context.

        When the context's trajectory has ended (``live`` false) the cells after the prefix are
        dropped first, so only the prefix is copied. When it goes on (a periodic reflection in the
        middle of an episode) the live cells are left alone and the whole sequence is copied; the
        restore drops what lies past the prefix, so the continuing episode re-evaluates nothing.
        """
        if not self.reuse_prefix:
            return None
        import llama_cpp

        tokens = self.tokens(messages)
        shared = min(common_prefix_length(self.llm._input_ids, tokens), len(tokens) - 1)
        if shared < MIN_PREFIX_TO_SAVE:
            return None
        if not live:
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
        self.llm._ctx.kv_cache_seq_rm(0, n, -1)  # a copy taken mid-episode holds cells past the prefix
        self.llm.input_ids[:n] = handle.tokens
        self.llm.n_tokens = n

    # --- cores -----------------------------------------------------------------------------
    def _fit_threads(self) -> None:
        """Take this model's fair share of the cores now (it changes as leafe processes come and go)."""
        if self.share is None:
            return
        threads = self.share.threads()
        if threads != self.threads:
            self.llm._ctx.set_n_threads(threads, threads)
            self.threads = threads

    def sharing_note(self) -> str | None:
        """A sentence when other leafe model processes share this machine's cores."""
        return self.share.sharing_note() if self.share is not None else None

    def _release_cores(self) -> None:
        if getattr(self, "share", None) is not None:
            self.share.close()  # type: ignore[union-attr]

    def close(self) -> None:
        self._release_cores()
        self.llm.close()
