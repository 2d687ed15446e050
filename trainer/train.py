"""Stage-2 training: LoRA (CPU) or QLoRA (CUDA) on a dataset's trained turns, L = L_cf + β·L_reh.

One job is one call of :func:`run_job`; everything it does is written to the job's row as it
happens (phase, step, loss, tokens/s, ETA) so the CLI, the TUI and ``leafe jobs`` can follow a job
running in another process. The loss is the next-token loss on the trained tokens only (the reply
and its end-of-turn token); counterfactual tokens weigh 1 and rehearsal tokens β. The reported
losses are the plain mean per trained token, comparable between settings.

Checkpoints (adapter weights, optimiser, scheduler, position in the data) are written every few
steps and when a job is cancelled, so ``--resume`` continues where the job stopped, in the same
order of examples, and the loss curve in the store has no duplicate steps.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from engine.cores import CoreShare
from engine.errors import LeafeError
from engine.store import Store, now
from trainer.dataset import read_dataset
from trainer.masking import TokenizedExample, tokenize_chat

METHODS = ("auto", "lora", "qlora")


class TrainError(LeafeError, RuntimeError):
    """A job cannot run as asked (no GPU for QLoRA, nothing to train, bad settings); one line."""


class Cancelled(Exception):
    """The job was asked to stop; it saved a checkpoint first."""


@dataclass(frozen=True)
class TrainConfig:
    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.05
    epochs: int = 2
    lr: float = 1e-4
    beta: float = 1.0
    batch_size: int = 1
    grad_accum: int = 4
    max_seq_len: int = 2048
    eval_fraction: float = 0.1
    warmup_ratio: float = 0.05
    checkpoint_every: int = 10
    max_steps: int | None = None
    seed: int = 0
    threads: int | None = None
    parity_samples: int = 3  # held-out prompts for the llama.cpp parity check (0: skip the check)

    def __post_init__(self) -> None:
        checks = [
            (self.rank >= 1, "the LoRA rank must be at least 1"),
            (self.epochs >= 1, "the number of epochs must be at least 1"),
            (self.lr > 0, "the learning rate must be positive"),
            (self.beta >= 0, "β, the rehearsal loss weight, must be 0 or more"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch size and accumulation must be at least 1"),
            (0 <= self.eval_fraction < 1, "the held-out fraction must be in [0, 1)"),
            (self.max_steps is None or self.max_steps >= 1, "the step limit must be at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise TrainError(message)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# ------------------------------------------------------------------------------------- hardware


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bitsandbytes_available() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except Exception:  # ImportError, or its own errors when no CUDA runtime is found
        return False
    return True


def choose_method(requested: str) -> str:
    """``auto`` is QLoRA where a CUDA GPU and bitsandbytes are present, else LoRA."""
    if requested not in METHODS:
        raise TrainError(f"method must be one of {', '.join(METHODS)}")
    if requested == "lora":
        return "lora"
    has_cuda = cuda_available()
    if requested == "qlora":
        if not has_cuda:
            raise TrainError(
                "QLoRA needs a CUDA GPU (4-bit bitsandbytes kernels) and this machine has none: "
                "train plain LoRA instead"
            )
        if not bitsandbytes_available():
            raise TrainError("QLoRA needs bitsandbytes: pip install 'leafe[qlora]'")
        return "qlora"
    return "qlora" if has_cuda and bitsandbytes_available() else "lora"


# ----------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Item:
    tokens: TokenizedExample
    weight: float  # 1 for counterfactual tokens, β for rehearsal
    kind: str


def prepare_items(
    records: list[dict[str, Any]], template: Any, config: TrainConfig
) -> tuple[list[Item], int]:
    """Tokenised examples with their loss weight; examples longer than ``max_seq_len`` are dropped."""
    items, dropped = [], 0
    for record in records:
        tokens = tokenize_chat(record["messages"], template)
        if len(tokens.input_ids) > config.max_seq_len:
            dropped += 1
            continue
        weight = config.beta if record.get("kind") == "reh" else 1.0
        items.append(Item(tokens, weight, record.get("kind", "reh")))
    return items, dropped


def split_items(items: list[Item], fraction: float, seed: int) -> tuple[list[Item], list[Item]]:
    """A held-out set for the eval loss: ``fraction`` of the examples, none when there are under 4."""
    if fraction <= 0 or len(items) < 4:
        return items, []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    held = set(order[: max(1, round(len(items) * fraction))])
    train = [it for i, it in enumerate(items) if i not in held]
    return train, [it for i, it in enumerate(items) if i in held]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return order


def collate(batch: list[Item], pad_id: int, device: Any) -> dict[str, Any]:
    """Right-padded ids, attention mask, the trained flag of each token and its loss weight."""
    import torch

    length = max(len(it.tokens.input_ids) for it in batch)
    ids = torch.full((len(batch), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    trained = torch.zeros((len(batch), length), dtype=torch.float32)
    for row, item in enumerate(batch):
        n = len(item.tokens.input_ids)
        ids[row, :n] = torch.tensor(item.tokens.input_ids)
        mask[row, :n] = 1
        trained[row, :n] = torch.tensor(item.tokens.trained, dtype=torch.float32)
    item_weights = torch.tensor([it.weight for it in batch], dtype=torch.float32).unsqueeze(1)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "weights": (trained * item_weights).to(device),
        "trained": trained.to(device),
    }


def token_losses(model: Any, batch: dict[str, Any], *, trim: bool = True) -> tuple[Any, Any, Any]:
    """Per-token next-token loss of the batch, with the weight and the trained flag of each target.

    With ``trim`` the vocabulary projection is computed only from the first trained token on (the
    context before it carries no loss): for a counterfactual example only its last reply is trained,
    and the projection onto a 50–150k-token vocabulary is a large share of a small model's compute.
    """
    import torch.nn.functional as F

    ids, trained = batch["input_ids"], batch["trained"]
    length = ids.shape[1]
    first = 1
    if trim:
        hits = trained[:, 1:].any(dim=0).nonzero()
        first = int(hits[0]) + 1 if len(hits) else 1
    keep = length - first + 1  # logits at positions first-1 … length-1 predict tokens first … length
    outputs = model(input_ids=ids, attention_mask=batch["attention_mask"], logits_to_keep=keep)
    logits = outputs.logits[:, :-1].float()
    targets = ids[:, first:]
    nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none")
    return nll.view(targets.shape), batch["weights"][:, first:], trained[:, first:]


# ---------------------------------------------------------------------------------------- model


def quiet_transformers() -> None:
    """No per-tensor progress bars or deprecation chatter in a job's output; its row says what happens."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")


def load_model(hf_dir: Path, method: str, config: TrainConfig) -> tuple[Any, Any]:
    """The base with fresh LoRA weights on every linear layer of the blocks, and its device."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    if config.threads:
        torch.set_num_threads(config.threads)
    # Near-zero losses drive gradients and Adam's moments into denormal floats, which make CPU
    # matmuls tens of times slower; flushing them to zero changes nothing measurable.
    torch.set_flush_denormal(True)
    torch.manual_seed(config.seed)
    if method == "qlora":
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        model = AutoModelForCausalLM.from_pretrained(hf_dir, quantization_config=quant, device_map={"": 0})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        device = torch.device("cuda")
    elif cuda_available():
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16).to("cuda")
        device = torch.device("cuda")
    else:
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
        device = torch.device("cpu")
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), device


def scheduler_for(optimizer: Any, total: int, warmup_ratio: float) -> Any:
    """Linear warm-up, then linear decay to zero at the last step."""
    import torch

    warmup = max(1, int(total * warmup_ratio))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------- checkpoints


@dataclass
class Position:
    step: int = 0  # optimiser steps done
    micro: int = 0  # micro-batches done (over all epochs)
    tokens: int = 0  # input tokens processed
    seconds: float = 0.0  # training time so far (excluding loading, eval, checkpoints)


def save_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, position: Position) -> None:
    import torch
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    save_file(state, tmp / "adapter.safetensors")
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, tmp / "optim.pt")
    (tmp / "position.json").write_text(json.dumps(asdict(position)))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def load_checkpoint(folder: Path, model: Any, optimizer: Any, scheduler: Any, device: Any) -> Position:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    set_peft_model_state_dict(model, load_file(folder / "adapter.safetensors", device=str(device)))
    state = torch.load(folder / "optim.pt", map_location=device, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return Position(**json.loads((folder / "position.json").read_text()))


# ------------------------------------------------------------------------------------------ jobs


def job_dir(store: Store, job_id: int) -> Path:
    """Where a job's checkpoint, adapter and log live: next to the database."""
    db = store.path.resolve()  # recorded paths must work from any folder
    return db.parent / f"{db.stem}.jobs" / f"job-{job_id}"


def template_for(base: Any) -> Any:
    """The chat template the engine uses for this base: the GGUF's own, else the HF checkpoint's."""
    if base.gguf is not None:
        from engine.chat_template import GgufChatTemplate

        return GgufChatTemplate.from_gguf(base.gguf)
    from trainer.masking import HfChatTemplate

    return HfChatTemplate(base.hf_dir)


class _StopFlag:
    """Set by SIGTERM (``leafe jobs cancel`` sends it) so the loop stops at a clean point."""

    def __init__(self) -> None:
        self.set = False

    def install(self) -> None:
        # Outside the main thread (tests, the TUI) signals cannot be caught; the store flag is enough.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, *_: Any) -> None:
        self.set = True


Progress = Callable[[dict[str, Any]], None]


def run_job(store: Store, job_id: int, *, progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) a training job to its end; the row says how it ended. Returns the row."""
    from trainer.base_model import resolve_base

    stop = _StopFlag()
    stop.install()
    job = store.job(job_id)
    if job["status"] in ("cancelled", "done"):  # cancelled while its worker was starting, or finished
        return job
    started = {} if job["started_at"] else {"started_at": now()}
    store.update_job(job_id, status="running", pid=os.getpid(), error=None, **started)
    report = progress or (lambda _row: None)
    try:
        config = TrainConfig.from_dict(job["config"])
        folder = job_dir(store, job_id)
        folder.mkdir(parents=True, exist_ok=True)
        store.update_job(job_id, out_dir=str(folder), phase="preparing the base model")
        base = resolve_base(job["base"])
        records = read_dataset(Path(job["dataset_path"]))
        items, dropped = prepare_items(records, template_for(base), config)
        if not items:
            raise TrainError(f"every example is longer than the sequence limit ({config.max_seq_len} tokens)")
        train, held = split_items(items, config.eval_fraction, config.seed)
        store.update_job(job_id, phase="loading the model")
        model, device = load_model(base.hf_dir, job["method"], config)
        _train(store, job_id, model, device, train, held, config, folder, stop, report, dropped)
        store.update_job(job_id, phase="saving the adapter")
        adapter_dir = folder / "adapter"
        model.save_pretrained(adapter_dir)
        adapter_id = _export(store, job, base, adapter_dir, folder, held or train, config)
        store.update_job(job_id, status="done", phase="done", eta_s=0.0)
        row = store.job(job_id)
        row["adapter_id"] = adapter_id
        report(row)
        return row
    except Cancelled:
        store.update_job(job_id, status="cancelled", phase="cancelled")
    except Exception as exc:  # the job's row carries the error; the caller decides how loud to be
        store.update_job(job_id, status="failed", phase="failed", error=_one_line(exc))
        raise
    return store.job(job_id)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _train(
    store: Store,
    job_id: int,
    model: Any,
    device: Any,
    train: list[Item],
    held: list[Item],
    config: TrainConfig,
    folder: Path,
    stop: _StopFlag,
    report: Progress,
    dropped: int,
) -> None:
    import torch

    per_epoch = math.ceil(len(train) / config.batch_size)
    steps_per_epoch = math.ceil(per_epoch / config.grad_accum)
    total = config.max_steps or steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    scheduler = scheduler_for(optimizer, total, config.warmup_ratio)
    checkpoint = folder / "checkpoint"
    position = Position()
    if checkpoint.is_dir():
        position = load_checkpoint(checkpoint, model, optimizer, scheduler, device)
        store.drop_metrics_after(job_id, position.step)
    store.update_job(
        job_id,
        phase="training",
        total_steps=total,
        note=f"{dropped} examples longer than the sequence limit left out" if dropped else None,
    )
    pad_id = model.config.pad_token_id or model.config.eos_token_id or 0
    if isinstance(pad_id, list):
        pad_id = pad_id[0]
    model.train()
    # On a CPU, training takes its fair share of the cores, re-read every step (engine/cores.py).
    share = (
        CoreShare("torch", f"training job {job_id}") if device.type == "cpu" and not config.threads else None
    )
    try:
        while position.step < total:
            if share is not None and (threads := share.threads()) != torch.get_num_threads():
                torch.set_num_threads(threads)
            if stop.set or store.cancel_requested(job_id):
                save_checkpoint(checkpoint, model, optimizer, scheduler, position)
                raise Cancelled
            started = time.perf_counter()
            window_nll = window_count = 0.0
            window_tokens = 0
            end_of_epoch = False
            for _ in range(config.grad_accum):  # one optimiser step; an epoch's last step may be shorter
                epoch, index = divmod(position.micro, per_epoch)
                order = epoch_order(len(train), config.seed, epoch)
                chosen = order[index * config.batch_size : (index + 1) * config.batch_size]
                batch = collate([train[i] for i in chosen], pad_id, device)
                nll, weights, trained = token_losses(model, batch)
                loss = (nll * weights).sum() / trained.sum().clamp(min=1.0) / config.grad_accum
                loss.backward()
                window_nll += float((nll.detach() * trained).sum())
                window_count += float(trained.sum())
                window_tokens += int(batch["attention_mask"].sum())
                position.micro += 1
                if position.micro % per_epoch == 0:
                    end_of_epoch = True
                    break
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - started
            position.step += 1
            position.tokens += window_tokens
            position.seconds += elapsed
            train_loss = window_nll / max(window_count, 1.0)
            speed = window_tokens / elapsed if elapsed > 0 else 0.0
            epoch_now = position.micro / per_epoch
            eta = (total - position.step) * position.seconds / position.step
            store.add_metric(
                job_id,
                "train",
                position.step,
                train_loss,
                epoch=epoch_now,
                tokens=window_tokens,
                tokens_per_s=speed,
                lr=scheduler.get_last_lr()[0],
            )
            store.update_job(
                job_id,
                step=position.step,
                epoch=epoch_now,
                train_loss=train_loss,
                tokens_per_s=speed,
                eta_s=eta,
            )
            if (end_of_epoch or position.step == total) and held:
                eval_loss = evaluate(model, held, pad_id, device, config.batch_size)
                store.add_metric(job_id, "eval", position.step, eval_loss, epoch=epoch_now)
                store.update_job(job_id, eval_loss=eval_loss)
            if position.step % config.checkpoint_every == 0 or position.step == total:
                save_checkpoint(checkpoint, model, optimizer, scheduler, position)
            report(store.job(job_id))
    finally:
        if share is not None:
            share.close()


def evaluate(model: Any, items: list[Item], pad_id: int, device: Any, batch_size: int) -> float:
    """Mean next-token loss per trained token of the held-out examples."""
    import torch

    was_training = model.training
    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            batch = collate(items[start : start + batch_size], pad_id, device)
            nll, _, trained = token_losses(model, batch)
            total += float((nll * trained).sum())
            count += float(trained.sum())
    if was_training:
        model.train()
    return total / max(count, 1.0)


def parity_window(tokens: TokenizedExample) -> tuple[list[int], int]:
    """At most ``parity.MAX_TOKENS`` tokens around the first trained reply, and where it starts.

    Both engines see the same window, so cutting the far context keeps the comparison fair.
    """
    from trainer.parity import MAX_TOKENS

    start = tokens.spans()[0][0]
    end = min(len(tokens.input_ids), start + MAX_TOKENS // 2)
    begin = max(0, end - MAX_TOKENS)
    return tokens.input_ids[begin:end], start - begin


def _export(
    store: Store,
    job: dict[str, Any],
    base: Any,
    adapter_dir: Path,
    folder: Path,
    samples: list[Item],
    config: TrainConfig,
) -> int:
    """GGUF LoRA for llama.cpp, the parity check against transformers, and the adapter's row."""
    from trainer.gguf_lora import export_gguf_lora

    store.update_job(job["id"], phase="exporting to GGUF")
    gguf_path = export_gguf_lora(adapter_dir, base.hf_dir, folder / "adapter.gguf")
    parity: dict[str, Any] = {}
    if base.gguf is not None and config.parity_samples > 0:
        from trainer.parity import adapter_parity

        store.update_job(job["id"], phase="checking parity")
        chosen = [parity_window(it.tokens) for it in samples[: config.parity_samples]]
        result = adapter_parity(base.hf_dir, adapter_dir, base.gguf, gguf_path, chosen)
        parity = {
            "parity": result.agreement,
            "parity_base": result.base_agreement,
            "parity_positions": result.positions,
            "parity_effect": result.adapter_effect,
        }
    return store.add_adapter(
        job_id=job["id"],
        dataset_id=job["dataset_id"],
        base=job["base"],
        base_gguf=str(base.gguf) if base.gguf else None,
        peft_dir=str(adapter_dir),
        gguf_path=str(gguf_path),
        rank=config.rank,
        alpha=config.alpha,
        **parity,
    )
