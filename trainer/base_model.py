"""The base model for training: the same GGUF the engine runs, as an ordinary Hugging Face checkpoint.

transformers reads a GGUF (dequantising it to fp32) but then treats the model as quantised, and
neither trains nor saves it. Dropping that quantiser state and saving once gives a plain checkpoint
with identical logits that peft, the trainer and the LoRA exporter accept; it is cached next to the
GGUF files, keyed by the GGUF's content, so conversion happens once per model. A person who already
has an HF checkpoint of the same model can point ``--base`` at its folder instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from engine.models import MODELS, ModelError, cache_root, resolve_model

MARKER = "leafe-base.json"  # written last: a folder without it is an interrupted conversion


@dataclass(frozen=True)
class BaseModel:
    """Where the trainable checkpoint is, and the GGUF it matches (None for a user's HF folder)."""

    hf_dir: Path
    gguf: Path | None
    name: str


def hf_cache_dir() -> Path:
    return cache_root() / "hf"


def _content_key(gguf: Path) -> str:
    """A short digest of the GGUF: the registry's sha256 when it is a known model file, else hashed."""
    for spec in MODELS.values():
        if spec.filename == gguf.name and gguf.stat().st_size == spec.size:
            return spec.sha256[:16]
    digest = hashlib.sha256()
    with gguf.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def is_hf_checkpoint(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file()


def resolve_base(spec: str, *, convert: bool = True) -> BaseModel:
    """A model name, a GGUF path or an HF checkpoint folder, as a trainable checkpoint folder."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not is_hf_checkpoint(path):
            raise ModelError(
                f"{path} is a folder without config.json: --base takes a model name, a GGUF file "
                "or a Hugging Face checkpoint folder"
            )
        return BaseModel(hf_dir=path.resolve(), gguf=None, name=path.name)
    gguf = resolve_model(spec)
    target = hf_cache_dir() / f"{gguf.stem}-{_content_key(gguf)}"
    if not (target / MARKER).is_file():
        if not convert:
            raise ModelError(f"{gguf.name} has not been converted for training yet")
        convert_gguf(gguf, target)
    return BaseModel(hf_dir=target, gguf=gguf, name=spec if spec in MODELS else gguf.name)


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise ``gguf`` into a plain fp32 HF checkpoint at ``target`` (atomically, by rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.train import quiet_transformers

    quiet_transformers()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        kwargs = {"gguf_file": gguf.name}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
        # transformers marks a GGUF-loaded model as quantised, which blocks training and saving;
        # the weights are already plain fp32 tensors, so the marks are dropped.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        config_path = work / "config.json"
        config = json.loads(config_path.read_text())
        if not config.get("architectures"):  # the GGUF LoRA exporter reads it
            config["architectures"] = [type(model).__name__]
            config_path.write_text(json.dumps(config, indent=2))
        (work / MARKER).write_text(json.dumps({"gguf": str(gguf), "gguf_name": gguf.name}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
