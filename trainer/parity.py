"""Does llama.cpp with the exported GGUF LoRA predict what transformers + peft predicts?

The exporter has to get tensor names, factor layouts, the alpha/r scale and the rotary row order
of q/k right, and each mistake still yields a file that llama.cpp loads without complaint. So the
check is behavioural: on real chat examples, teacher-forced, compare the greedy (top-1) next token
of both engines at every position of the trained response. The engine runs a Q4 GGUF while
transformers runs its fp32 dequantisation, so agreement is never 100 %; the same comparison without
the adapter measures that floor. A good export agrees about as well as the floor; a broken one
falls clearly below it. ``adapter_effect`` says how often the adapter changes transformers' top-1 at
all: if it is near zero the check proves nothing about the adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_TOKENS = 512  # CPU-cheap; the check needs a few hundred positions, not long contexts

Sample = tuple[Sequence[int], int]  # (token ids of a full chat example, index of the first response token)


@dataclass(frozen=True)
class ParityResult:
    """Top-1 agreement over ``positions`` response positions (fractions in [0, 1])."""

    agreement: float  # transformers + peft vs llama.cpp + GGUF LoRA
    base_agreement: float  # transformers vs llama.cpp, both without the adapter: the quantisation floor
    positions: int
    adapter_effect: float = 0.0  # how often the adapter changes transformers' top-1


def _check_samples(samples: Sequence[Sample]) -> list[tuple[list[int], int]]:
    checked = []
    for tokens, start in samples:
        tokens = [int(t) for t in tokens]
        if not 1 <= start < len(tokens):
            raise ValueError(f"a sample's response start {start} is outside its {len(tokens)} tokens")
        if len(tokens) > MAX_TOKENS:
            raise ValueError(
                f"a sample has {len(tokens)} tokens; the parity check takes at most {MAX_TOKENS}"
            )
        checked.append((tokens, start))
    if not checked:
        raise ValueError("the parity check needs at least one sample")
    return checked


def _response_argmax(logits: np.ndarray, start: int, length: int) -> np.ndarray:
    """Top-1 predictions for the response tokens: the logits at position p predict token p + 1."""
    return np.asarray(logits[start - 1 : length - 1]).argmax(axis=-1)


def _hf_predictions(model, samples: list[tuple[list[int], int]]) -> list[np.ndarray]:
    import torch

    predictions = []
    with torch.no_grad():
        for tokens, start in samples:
            logits = model(input_ids=torch.tensor([tokens])).logits[0].float().numpy()
            predictions.append(_response_argmax(logits, start, len(tokens)))
    return predictions


def _llama_predictions(
    gguf_model: Path, gguf_lora: Path | None, samples: list[tuple[list[int], int]], n_threads: int
) -> list[np.ndarray]:
    from llama_cpp import Llama
    from llama_cpp._utils import suppress_stdout_stderr

    longest = max(len(tokens) for tokens, _ in samples)
    with suppress_stdout_stderr(disable=False):  # llama.cpp logs a line per adapted tensor
        llm = Llama(
            model_path=str(gguf_model),
            lora_path=str(gguf_lora) if gguf_lora else None,
            n_ctx=max(longest, 64),
            n_batch=max(longest, 64),
            logits_all=True,  # keeps one row of logits per evaluated position in ``llm.scores``
            n_threads=n_threads,
            verbose=False,
        )
    try:
        predictions = []
        for tokens, start in samples:
            llm.reset()
            llm.eval(tokens)
            predictions.append(_response_argmax(llm.scores[: len(tokens)], start, len(tokens)))
        return predictions
    finally:
        llm.close()


def _agreement(left: list[np.ndarray], right: list[np.ndarray]) -> float:
    same = sum(int((a == b).sum()) for a, b in zip(left, right, strict=True))
    return same / sum(len(a) for a in left)


def adapter_parity(
    base_hf_dir: Path,
    peft_dir: Path,
    gguf_model: Path,
    gguf_lora: Path,
    samples: Sequence[Sample],
    *,
    n_threads: int = 2,
) -> ParityResult:
    """Teacher-forced top-1 agreement of transformers + peft and llama.cpp + GGUF LoRA on ``samples``,
    and the same without the adapter. Each sample is ``(token_ids, start)``; positions ``start`` to
    the end are compared. Loads the HF model once (fp32) and each GGUF once, freeing them after."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    checked = _check_samples(samples)
    model = AutoModelForCausalLM.from_pretrained(str(base_hf_dir), dtype=torch.float32)
    model.eval()
    try:
        hf_base = _hf_predictions(model, checked)
        model = PeftModel.from_pretrained(model, str(peft_dir))
        model.eval()
        hf_adapted = _hf_predictions(model, checked)
    finally:
        del model
    cpp_base = _llama_predictions(Path(gguf_model), None, checked, n_threads)
    cpp_adapted = _llama_predictions(Path(gguf_model), Path(gguf_lora), checked, n_threads)
    return ParityResult(
        agreement=_agreement(hf_adapted, cpp_adapted),
        base_agreement=_agreement(hf_base, cpp_base),
        positions=sum(len(p) for p in hf_base),
        adapter_effect=1.0 - _agreement(hf_base, hf_adapted),
    )
