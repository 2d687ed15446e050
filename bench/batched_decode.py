"""What batched decoding and a grammar fast path could buy the in-process engine (issue 12).

Measured side by side in one process with llama.cpp's own API (llama-cpp-python's low-level
bindings), on the default model:

- **Batching**: S sequences share one prompt (evaluated once, its KV copied to S sequences), then
  decode ``--tokens`` tokens each in lockstep, one ``llama_decode`` of S tokens per step. Generated
  tokens per second for S = 1, 2, 4, 8, against S = 1 (today's single-stream decoding).
- **Grammar**: one sequence under leafe's think/action grammar, (a) the grammar applied to the whole
  vocabulary before every sample (what llama-cpp-python does today), against (b) sampling first and
  checking only the sampled token against the grammar, constraining the whole distribution only
  when it is rejected (llama.cpp's common sampler works this way). Same seed; the outputs are
  compared too.

Writes ``bench/results/batched_decode.json`` with machine, settings and commit.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import llama_cpp as L

from engine.actions import action_grammar
from engine.backends.check_first import CheckFirstSampler
from engine.envs.sokoban import SokobanEnv
from engine.models import DEFAULT_MODEL, resolve_model

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.provenance import commit, machine  # noqa: E402

PROMPT = (
    "<|im_start|>system\nYou are an agent solving a Sokoban puzzle. Think briefly, then act.<|im_end|>\n"
    "<|im_start|>user\n"
    + "The grid is a 7x7 room with walls around it and two boxes near targets. " * 12
    + "What is your next move?<|im_end|>\n<|im_start|>assistant\n"
)


def tokenize(vocab, text: str) -> list[int]:
    raw = text.encode()
    buf = (L.llama_token * (len(raw) + 16))()
    n = L.llama_tokenize(vocab, raw, len(raw), buf, len(buf), True, True)
    return list(buf[:n])


def make_context(model, threads: int, n_seq: int, n_ctx: int):
    params = L.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_seq_max = n_seq
    params.kv_unified = True  # one cache for all sequences, so the prompt's cells can be shared
    params.n_threads = threads
    params.n_threads_batch = threads
    return L.llama_init_from_model(model, params)


def decode(ctx, batch, entries: list[tuple[int, int, int, bool]]) -> None:
    """One llama_decode of (token, pos, seq, wants logits) entries."""
    batch.n_tokens = len(entries)
    for i, (token, pos, seq, logits) in enumerate(entries):
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq
        batch.logits[i] = logits
    if L.llama_decode(ctx, batch) != 0:
        raise RuntimeError("llama_decode failed")


def sampler(seed: int, temperature: float):
    """Temperature and a seeded draw: what each batched sequence samples with."""
    chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
    L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed))
    return chain


def batched(model, vocab, prompt: list[int], streams: int, tokens: int, threads: int) -> float:
    """Generated tokens per second with ``streams`` sequences decoded together."""
    ctx = make_context(model, threads, max(streams, 1), 2048)
    batch = L.llama_batch_init(512, 0, max(streams, 1))
    try:
        decode(ctx, batch, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        memory = L.llama_get_memory(ctx)
        for seq in range(1, streams):
            L.llama_memory_seq_cp(memory, 0, seq, -1, -1)
        samplers = [sampler(100 + s, 0.7) for s in range(streams)]
        last = [L.llama_sampler_sample(samplers[s], ctx, -1) for s in range(streams)]
        started = time.perf_counter()
        for step in range(tokens):
            pos = len(prompt) + step
            decode(ctx, batch, [(last[s], pos, s, True) for s in range(streams)])
            last = [L.llama_sampler_sample(samplers[s], ctx, s) for s in range(streams)]
        seconds = time.perf_counter() - started
        for chain in samplers:
            L.llama_sampler_free(chain)
        return streams * tokens / seconds
    finally:
        L.llama_batch_free(batch)
        L.llama_free(ctx)


def grammar_run(model, vocab, prompt: list[int], tokens: int, threads: int, grammar: str, fast: bool):
    """(tokens/s, token ids) of one sequence under ``grammar`` with the engine's own sampler:
    checked first (``fast``), or constraining the whole vocabulary at every token."""
    ctx = make_context(model, threads, 1, 2048)
    batch = L.llama_batch_init(512, 0, 1)
    chooser = CheckFirstSampler(vocab, 0.7, 7, grammar, check_first=fast)
    out: list[int] = []
    try:
        decode(ctx, batch, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        started = time.perf_counter()
        for step in range(tokens):
            token = chooser.pick(ctx, -1)
            out.append(token)
            if L.llama_vocab_is_eog(vocab, token):
                break
            decode(ctx, batch, [(token, len(prompt) + step, 0, True)])
        seconds = time.perf_counter() - started
        return len(out) / seconds, out
    finally:
        chooser.free()
        L.llama_batch_free(batch)
        L.llama_free(ctx)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=Path("bench/results/batched_decode.json"))
    args = parser.parse_args()

    L.llama_backend_init()
    params = L.llama_model_default_params()
    model = L.llama_model_load_from_file(str(resolve_model(args.model)).encode(), params)
    vocab = L.llama_model_get_vocab(model)
    prompt = tokenize(vocab, PROMPT)

    rows = []
    base = None
    for streams in (1, 2, 4, 8):
        rate = batched(model, vocab, prompt, streams, args.tokens, args.threads)
        base = base or rate
        rows.append({"streams": streams, "tok_per_s": round(rate, 1), "vs_one": round(rate / base, 2)})
        print(f"batch of {streams}: {rate:6.1f} generated tok/s  ({rate / base:.2f}x single-stream)")

    grammar = action_grammar(SokobanEnv().action_grammar(), 400)
    full_rate, full_out = grammar_run(model, vocab, prompt, args.tokens, args.threads, grammar, fast=False)
    fast_rate, fast_out = grammar_run(model, vocab, prompt, args.tokens, args.threads, grammar, fast=True)
    print(f"grammar on the whole vocabulary: {full_rate:6.1f} tok/s (baseline)")
    print(f"grammar checked first:           {fast_rate:6.1f} tok/s ({fast_rate / full_rate:.2f}x)")
    print(f"same tokens: {full_out == fast_out}")

    result = {
        "bench": "batched_decode",
        "machine": machine(),
        "settings": {
            "model": args.model,
            "tokens": args.tokens,
            "threads": args.threads,
            "prompt_tokens": len(prompt),
        },
        "commit": commit(),
        "batching": rows,
        "grammar": {
            "full_tok_per_s": round(full_rate, 1),
            "check_first_tok_per_s": round(fast_rate, 1),
            "speedup": round(fast_rate / full_rate, 2),
            "same_tokens": full_out == fast_out,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    L.llama_model_free(model)


if __name__ == "__main__":
    main()
