"""Sampling under a grammar without constraining the whole vocabulary at every token.

llama-cpp-python applies the grammar to every one of the vocabulary's entries (152k for Qwen) before
each sample, which cost a third of the speed here (FACTS.md). ``CheckFirstSampler`` samples from the
unconstrained distribution first and asks the grammar about that one token; only when it is rejected
is the whole distribution constrained and sampled again (llama.cpp's common sampler works this way).
Accepting an allowed draw and redrawing from the constrained distribution otherwise is rejection
sampling: without truncation the reply follows the same distribution over allowed tokens. With the
truncation samplers (top-k, top-p, min-p, llama-cpp-python's defaults), the first draw comes from
the top of the unconstrained distribution, so allowed tokens inside it are a little favoured over
the full-constraint path; and the random stream is used differently, so a seed gives other replies.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

TOP_K, TOP_P, MIN_P = 40, 0.95, 0.05  # llama-cpp-python's create_completion defaults


class CheckFirstSampler:
    """One reply's sampler: seeded, with an optional GBNF grammar checked on the sampled token."""

    def __init__(
        self, vocab: Any, temperature: float, seed: int, grammar: str | None, *, check_first: bool = True
    ) -> None:
        """``check_first`` off: the grammar constrains the whole vocabulary at every token (the
        baseline ``bench/batched_decode.py`` measures the check against)."""
        import llama_cpp as L

        self.L, self.vocab = L, vocab
        self.n_vocab = L.llama_vocab_n_tokens(vocab)
        chain = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
        if temperature <= 0:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_greedy())
        else:
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_k(TOP_K))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_top_p(TOP_P, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_min_p(MIN_P, 1))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_temp(temperature))
            L.llama_sampler_chain_add(chain, L.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        self.chain = chain
        self.check_first = check_first
        self.grammar = None
        if grammar is not None:
            self.grammar = L.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not self.grammar:
                self.free()
                raise ValueError("llama.cpp could not parse the reply grammar")
            self._candidates = (L.llama_token_data * self.n_vocab)()
            self._view = np.ctypeslib.as_array(self._candidates)
            self._ids = np.arange(self.n_vocab, dtype=np.int32)
            self._one = (L.llama_token_data * 1)()

    def pick(self, ctx: Any, row: int) -> int:
        """The next token from the logits of batch row ``row`` (-1: the last); accepted by the samplers."""
        L = self.L
        if self.grammar is None:
            return int(L.llama_sampler_sample(self.chain, ctx, row))
        logits = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, row), shape=(self.n_vocab,))
        rejected = True
        if self.check_first:
            array = self._fill(logits)
            L.llama_sampler_apply(self.chain, ctypes.byref(array))
            token = int(self._candidates[array.selected].id)
            self._one[0].id, self._one[0].logit, self._one[0].p = token, 1.0, 0.0
            single = L.llama_token_data_array(self._one, 1, -1, False)
            L.llama_sampler_apply(self.grammar, ctypes.byref(single))
            rejected = self._one[0].logit == float("-inf")
        if rejected:  # constrain the whole distribution
            array = self._fill(logits)
            L.llama_sampler_apply(self.grammar, ctypes.byref(array))
            L.llama_sampler_apply(self.chain, ctypes.byref(array))
            token = int(self._candidates[array.selected].id)
        L.llama_sampler_accept(self.chain, token)
        if not L.llama_vocab_is_eog(self.vocab, token):
            L.llama_sampler_accept(self.grammar, token)
        return token

    def _fill(self, logits: np.ndarray) -> Any:
        """The candidates in vocabulary order with fresh logits (samplers sort and mask in place)."""
        self._view["id"] = self._ids
        self._view["logit"] = logits
        self._view["p"] = 0.0
        return self.L.llama_token_data_array(self._candidates, self.n_vocab, -1, False)

    def free(self) -> None:
        for name in ("chain", "grammar"):
            sampler = getattr(self, name, None)
            if sampler:
                self.L.llama_sampler_free(sampler)
            setattr(self, name, None)
