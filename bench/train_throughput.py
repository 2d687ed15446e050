"""Training throughput: `leafe train` (run_job) against a bare peft loop on the same data and model.

Both train the same LoRA (rank, targets, lr, batch 1, no accumulation) on the same tokenised
examples for the same number of steps, on the same machine, one after the other, alternating over
``--rounds``. Tokens/s counts every input token of a step (context and trained) divided by the time
of the steps alone (loading and export excluded on both sides). The ratio leafe / bare says what
leafe's bookkeeping costs (weighted loss, a store row per step, checkpoints, cancel checks).

    .venv/bin/python bench/train_throughput.py [--base smollm2-135m] [--steps 12] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.store import Store  # noqa: E402
from tests.doubles import explore_recovery, help_for, policy, rollback_branch  # noqa: E402
from trainer.dataset import DatasetSettings, build_dataset, read_dataset  # noqa: E402
from trainer.jobs import create_job  # noqa: E402
from trainer.train import TrainConfig, prepare_items, run_job, template_for  # noqa: E402


def make_data(folder: Path, base: str, dataset: Path | None) -> tuple[Store, Path]:
    store = Store(folder / "bench.db")
    if dataset is not None:
        return store, dataset
    for note in ("", " (sure)", " (certain)", " (checked)"):  # four distinct recoveries
        run_id, _ = explore_recovery(store, policy(note=note), model=base)
        store.set_review(rollback_branch(store, run_id).id, "approved")
    settings = DatasetSettings(rehearsal_fraction=0.5, cf_per_task=4)
    build_dataset(store, settings, folder / "bench.jsonl", action_help=help_for)
    return store, folder / "bench.jsonl"


def leafe_round(store: Store, data: Path, base: str, config: TrainConfig) -> float:
    job = create_job(store, str(data), base, "lora", config)
    run_job(store, job)
    metrics = store.metrics(job, "train")
    tokens = sum(m["tokens"] for m in metrics)
    seconds = sum(m["tokens"] / m["tokens_per_s"] for m in metrics)
    return tokens / seconds


def bare_round(data: Path, base: str, config: TrainConfig) -> float:
    """The loop a person would write with transformers + peft: labels -100 off the response."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from trainer.base_model import resolve_base

    resolved = resolve_base(base)
    items, _ = prepare_items(read_dataset(data), template_for(resolved), config)
    torch.set_num_threads(config.threads or torch.get_num_threads())
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_pretrained(resolved.hf_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules="all-linear"
    )
    model = get_peft_model(model, lora)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    tokens, seconds = 0, 0.0
    for step in range(config.max_steps or 1):
        item = items[step % len(items)]
        ids = torch.tensor([item.tokens.input_ids])
        labels = ids.clone()
        labels[0, [not t for t in item.tokens.trained]] = -100
        started = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - started
        tokens += ids.numel()
    return tokens / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="smollm2-135m")
    parser.add_argument(
        "--dataset", type=Path, default=None, help="a JSONL dataset [default: a scripted tree]"
    )
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    config = TrainConfig(
        rank=args.rank,
        grad_accum=1,
        max_steps=args.steps,
        eval_fraction=0.0,
        parity_samples=0,
        checkpoint_every=max(1, args.steps // 2),
        dropout=0.0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        store, data = make_data(Path(tmp), args.base, args.dataset)
        n_examples = len(read_dataset(data))
        leafe, bare = [], []
        for _ in range(args.rounds):
            leafe.append(leafe_round(store, data, args.base, config))
            bare.append(bare_round(data, args.base, config))
    ratio = statistics.median(a / b for a, b in zip(leafe, bare, strict=True))

    def rounds(values: list[float]) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    print(f"base {args.base}, {n_examples} examples, LoRA rank {args.rank}")
    print(f"{args.steps} steps x {args.rounds} rounds, alternating; tokens/s = input tokens / step time")
    print(f"leafe train : {statistics.median(leafe):8.1f} tokens/s  (rounds: {rounds(leafe)})")
    print(f"bare peft   : {statistics.median(bare):8.1f} tokens/s  (rounds: {rounds(bare)})  <- baseline")
    print(f"ratio leafe/bare (median of rounds): {ratio:.2f}")


if __name__ == "__main__":
    main()
