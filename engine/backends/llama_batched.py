"""The in-process llama.cpp engine with several sequences decoded in one batch (``--workers N``).

Single-stream decoding on a CPU reads the whole model for every token, so it is bound by memory
bandwidth; decoding N sequences in one ``llama_decode`` reads it once for N tokens. This backend is
a small server inside the process: worker threads call ``complete`` at once, a scheduler thread owns
the llama.cpp context and decodes every active sequence together, one token each per step, with the
prompts of newly arrived calls evaluated in the same batches.

Each of the N slots is a llama.cpp sequence that keeps the KV of its last prompt and reply; a call
takes the free slot whose tokens share the longest prefix with its prompt, so a trajectory's next
step, or a branch of the same history, re-evaluates only its new tokens (as the single-stream
backend's prefix reuse does). Samples draw from their own seeded sampler, so a call's reply does not
depend on which calls share its batches beyond the float rounding of batched kernels.

A grammar is checked against the sampled token first (``engine.backends.check_first``).
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from engine.backends.base import BackendError, Completion, Message, ModelBackend, common_prefix_length
from engine.backends.check_first import CheckFirstSampler
from engine.backends.llama import reply_room

if TYPE_CHECKING:
    from engine.specs import ModelSpec

N_BATCH = 512  # tokens per llama_decode (prompt chunks and one token per generating slot)


@dataclass
class _Call:
    """One ``complete`` call, from the worker thread that waits for it."""

    tokens: list[int]
    temperature: float
    max_tokens: int
    seed: int
    grammar: str | None
    started: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: Completion | None = None
    error: BaseException | None = None


@dataclass
class _Slot:
    """One llama.cpp sequence: the tokens its KV holds, and the call it serves now."""

    seq: int
    tokens: list[int] = field(default_factory=list)  # evaluated: their KV is in the cache
    call: _Call | None = None
    pending: list[int] = field(default_factory=list)  # prompt tokens still to evaluate
    cached: int = 0
    generated: list[int] = field(default_factory=list)
    next_token: int | None = None  # sampled, not yet evaluated
    sampler: CheckFirstSampler | None = None
    row: int = -1  # this step's logits row in the batch (-1: none)


class BatchedLlamaBackend(ModelBackend):
    """A GGUF model decoding up to ``slots`` sequences at once in this process."""

    concurrent_calls = True

    def __init__(
        self,
        model_path: str | Path,
        *,
        slots: int = 4,
        n_ctx: int = 4096,
        lora_path: str | Path | None = None,
        n_threads: int | None = None,
        core_group: str | None = None,
    ) -> None:
        import llama_cpp as L

        from engine.backends.llama import MIN_N_CTX, check_lora_adapter
        from engine.chat_template import GgufChatTemplate, TemplateError
        from engine.cores import CoreShare

        path = Path(model_path)
        if not path.is_file():
            raise BackendError(f"model file {path} does not exist")
        if n_ctx < MIN_N_CTX:
            raise BackendError(f"a context of {n_ctx} tokens is too small: it must hold at least {MIN_N_CTX}")
        if slots < 1:
            raise BackendError(f"a batched model needs at least one slot, not {slots}")
        if lora_path is not None:
            check_lora_adapter(lora_path)
        self.L = L
        self.slots_n, self.n_ctx = slots, n_ctx
        try:
            self.template = GgufChatTemplate.from_gguf(path)
        except TemplateError as exc:
            raise BackendError(str(exc)) from exc
        self.share = (
            CoreShare("llama.cpp", f"{path.name} x{slots}", group=core_group) if n_threads is None else None
        )
        self.threads = n_threads or self.share.threads()  # type: ignore[union-attr]
        self._model = self._context = self._adapter = self._batch = None
        try:
            self._open(path, lora_path)
        except BaseException:
            self.close()
            raise
        self.vocab = L.llama_model_get_vocab(self._model)
        self.slots = [_Slot(seq) for seq in range(slots)]
        self._queue: list[_Call] = []
        self._cond = threading.Condition()
        self._closed = False
        self._tokenize_lock = threading.Lock()
        self.batch_sizes: Counter[int] = Counter()  # decode steps by how many sequences they carried
        self.name = f"llama.cpp:{path.name} (batched x{slots})"
        self._thread = threading.Thread(target=self._serve, name="leafe-llama-batch", daemon=True)
        self._thread.start()

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> BatchedLlamaBackend:
        from engine.models import DEFAULT_MODEL, ModelError, resolve_model

        try:
            path = resolve_model(spec.model or DEFAULT_MODEL)
        except ModelError as exc:
            raise BackendError(str(exc)) from None
        return cls(
            path,
            slots=int(spec.options.get("slots", 4)),
            n_ctx=spec.n_ctx,
            lora_path=spec.adapter,
            core_group=spec.options.get("core_group"),
        )

    def _open(self, path: Path, lora_path: str | Path | None) -> None:
        L = self.L
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):
            L.llama_backend_init()
            self._model = L.llama_model_load_from_file(str(path).encode(), L.llama_model_default_params())
            if not self._model:
                raise BackendError(f"llama.cpp could not load {path.name}")
            params = L.llama_context_default_params()
            params.n_ctx = self.n_ctx * self.slots_n
            params.n_batch = params.n_ubatch = N_BATCH
            params.n_seq_max = self.slots_n
            params.kv_unified = True  # one cache: slots share cells, a prefix can be copied between them
            params.n_threads = params.n_threads_batch = self.threads
            self._context = L.llama_init_from_model(self._model, params)
            if not self._context:
                raise BackendError(
                    f"llama.cpp could not make a context of {self.slots_n} x {self.n_ctx} tokens"
                )
            if lora_path is not None:
                self._adapter = L.llama_adapter_lora_init(self._model, str(lora_path).encode())
                adapters = (L.llama_adapter_lora_p_ctypes * 1)(self._adapter)
                scales = (ctypes.c_float * 1)(1.0)
                if not self._adapter or L.llama_set_adapters_lora(self._context, adapters, 1, scales):
                    raise BackendError(f"llama.cpp could not apply the adapter {Path(lora_path).name}")
        self._batch = L.llama_batch_init(N_BATCH, 0, 1)
        self._memory = L.llama_get_memory(self._context)

    # --- the calls (worker threads) ------------------------------------------------------------
    def tokens(self, messages: list[Message]) -> list[int]:
        with self._tokenize_lock:
            return self.template.encode(self.template.render(messages))

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
        room = reply_room(tokens, self.n_ctx)  # each slot holds n_ctx tokens
        call = _Call(tokens, temperature, min(max_tokens, room), seed, grammar)
        with self._cond:
            if self._closed or not self._thread.is_alive():
                raise BackendError("the batched model was closed")
            self._queue.append(call)
            self._cond.notify()
        call.done.wait()
        if call.error is not None:
            if isinstance(call.error, BackendError):
                raise call.error
            raise BackendError(f"llama.cpp failed: {call.error}") from call.error
        assert call.result is not None
        return call.result

    # --- the scheduler (one thread owns the context) -------------------------------------------
    def _serve(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._closed and not self._queue and not self._active():
                        self._cond.wait()
                    if self._closed:
                        break
                    self._assign()
                try:
                    self._step()
                except Exception as exc:  # noqa: BLE001 - the calls in this step get the error
                    self._fail_all(exc)
        except BaseException as exc:  # the scheduler itself failed: no call may wait for it
            with self._cond:
                self._closed = True
            self._fail_all(BackendError(f"the batched model stopped: {exc}"))
            raise
        self._fail_all(BackendError("the batched model was closed"))

    def _active(self) -> list[_Slot]:
        return [s for s in self.slots if s.call is not None]

    def _assign(self) -> None:
        """Give queued calls the free slots, each the one sharing the longest prefix with it."""
        while self._queue:
            free = [s for s in self.slots if s.call is None]
            if not free:
                return
            call = self._queue.pop(0)
            slot = max(free, key=lambda s: common_prefix_length(s.tokens, call.tokens))
            keep = min(common_prefix_length(slot.tokens, call.tokens), len(call.tokens) - 1)
            self.L.llama_memory_seq_rm(self._memory, slot.seq, keep, -1)
            slot.tokens = call.tokens[:keep]
            slot.pending = call.tokens[keep:]
            slot.cached, slot.call, slot.generated, slot.next_token = keep, call, [], None
            try:
                self._make_samplers(slot)
            except BackendError as exc:  # a grammar llama.cpp cannot parse fails its own call only
                slot.call = None
                call.error = exc
                call.done.set()

    def _make_samplers(self, slot: _Slot) -> None:
        call = slot.call
        assert call is not None
        self._free_samplers(slot)
        try:
            slot.sampler = CheckFirstSampler(self.vocab, call.temperature, call.seed, call.grammar)
        except ValueError as exc:
            raise BackendError(str(exc)) from None

    def _free_samplers(self, slot: _Slot) -> None:
        if slot.sampler is not None:
            slot.sampler.free()
            slot.sampler = None

    def _step(self) -> None:
        """One llama_decode: a token of every generating slot, then prompt chunks; then sampling."""
        if self.share is not None:
            threads = self.share.threads()
            if threads != self.threads:
                self.L.llama_set_n_threads(self._context, threads, threads)
                self.threads = threads
        entries: list[tuple[int, int, int, bool]] = []
        fed: dict[int, int] = {}  # slot -> prompt tokens in this batch
        for slot in self._active():
            slot.row = -1
            if slot.next_token is not None:
                slot.row = len(entries)
                entries.append((slot.next_token, len(slot.tokens), slot.seq, True))
        for slot in self._active():
            if slot.pending and len(entries) < N_BATCH:
                chunk = slot.pending[: N_BATCH - len(entries)]
                last = len(chunk) == len(slot.pending)
                for i, token in enumerate(chunk):
                    entries.append((token, len(slot.tokens) + i, slot.seq, last and i == len(chunk) - 1))
                fed[slot.seq] = len(chunk)
                if last:
                    slot.row = len(entries) - 1
        if not entries:
            return
        self._decode(entries)
        self.batch_sizes[sum(1 for s in self._active() if s.row >= 0)] += 1
        for slot in self._active():
            if slot.next_token is not None:
                slot.tokens.append(slot.next_token)
                slot.next_token = None
            elif slot.seq in fed:
                slot.tokens += slot.pending[: fed[slot.seq]]
                slot.pending = slot.pending[fed[slot.seq] :]
            if slot.row >= 0:
                self._sample(slot)

    def _decode(self, entries: list[tuple[int, int, int, bool]]) -> None:
        batch = self._batch
        batch.n_tokens = len(entries)
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
            batch.seq_id[i][0], batch.logits[i] = seq, logits
        status = self.L.llama_decode(self._context, batch)
        if status != 0:
            raise BackendError(
                f"llama.cpp could not decode a batch of {len(entries)} tokens (status {status})"
            )

    def _sample(self, slot: _Slot) -> None:
        call, sampler = slot.call, slot.sampler
        assert call is not None and sampler is not None
        token = sampler.pick(self._context, slot.row)
        if self.L.llama_vocab_is_eog(self.vocab, token):
            self._finish(slot)
            return
        slot.generated.append(token)
        if len(slot.generated) >= call.max_tokens or len(slot.tokens) + 1 >= self.n_ctx:
            self._finish(slot)
            return
        slot.next_token = token

    def _finish(self, slot: _Slot) -> None:
        call = slot.call
        assert call is not None
        text = self.template.decode(slot.generated)
        call.result = Completion(
            text=text,
            prompt_tokens=len(call.tokens),
            cached_tokens=slot.cached,
            generated_tokens=len(slot.generated),
            seconds=time.perf_counter() - call.started,
        )
        slot.call, slot.pending, slot.next_token = None, [], None
        self._free_samplers(slot)
        call.done.set()

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            calls = [s.call for s in self.slots if s.call is not None] + self._queue
            self._queue = []
        for slot in self.slots:
            if slot.call is not None:
                slot.call = None
                slot.tokens, slot.pending, slot.next_token = [], [], None  # its KV is not trusted
                self.L.llama_memory_seq_rm(self._memory, slot.seq, 0, -1)
        for call in calls:
            call.error = exc
            call.done.set()

    def sharing_note(self) -> str | None:
        return self.share.sharing_note() if self.share is not None else None

    def close(self) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            thread.join()
            self._thread = None
            for slot in self.slots:
                self._free_samplers(slot)
        L = getattr(self, "L", None)
        if L is None:
            return
        if self._batch is not None:
            L.llama_batch_free(self._batch)
            self._batch = None
        if self._context:
            L.llama_free(self._context)
            self._context = None
        if self._adapter:
            L.llama_adapter_lora_free(self._adapter)
            self._adapter = None
        if self._model:
            L.llama_model_free(self._model)
            self._model = None
        if self.share is not None:
            self.share.close()
            self.share = None
        template = getattr(self, "template", None)
        if template is not None:
            template.llm.close()
            self.template = None
