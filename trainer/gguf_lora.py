"""Export a trained PEFT LoRA adapter as a GGUF LoRA that llama.cpp applies at load time.

Why a writer of our own: llama.cpp's converter is a script inside its source tree (vendored in
llama-cpp-python's sdist, not installed with the built package) that imports the rest of that tree's
conversion code, so depending on it means depending on a source checkout of a given llama.cpp. What
an adapter needs is small: a few metadata keys and, per adapted weight, the two low-rank factors
under the GGUF tensor name of that weight. gguf-py (an ordinary package) gives us the file writer
and the HF -> GGUF tensor name map, so the exporter stays small and ours to test, and it refuses
what it cannot express (DoRA, rsLoRA, embeddings, ...) in one line instead of writing a file that
loads but computes something else. ``trainer.parity`` checks the result against transformers +
peft on real token positions; that check, not this code, is what says an export is right.

Layout facts the exporter relies on, each verified with the parity check (``tests/test_export.py``;
breaking any of them drops the agreement far below the quantisation floor):

* PEFT stores ``lora_A`` as (r, in) and ``lora_B`` as (out, r). GGML lists dimensions in the
  reverse order of numpy, so writing the arrays as they are gives ``lora_a`` ne = (in, r) and
  ``lora_b`` ne = (r, out), which is what llama.cpp matches against the base weight (in, out).
* llama.cpp scales the product by ``adapter.lora.alpha / r`` like PEFT's default (not rsLoRA).
* The llama-architecture GGUF stores ``attn_q`` / ``attn_k`` with their output rows reordered for
  its rotary implementation (the halves of each head interleaved); HF keeps them split in halves.
  The delta ``B @ A`` lives in the output space of the base weight, so ``lora_B``'s rows must be
  reordered the same way. Qwen2 GGUFs keep HF's order.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import LeafeError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."
# A LoRA factor as peft saves it; embedding LoRAs use ``lora_embedding_A/B`` without ``.weight``.
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<embedding>embedding_)?(?P<factor>[AB])(?:\.weight)?$")


class ExportError(LeafeError, ValueError):
    """The adapter cannot be exported; the message is one line that names the reason."""


@dataclass(frozen=True)
class _Arch:
    """What the exporter needs to know about one base architecture."""

    gguf_name: str  # general.architecture, which llama.cpp compares with the base model's
    rotary_permuted: bool  # whether the GGUF reorders the rows of attn_q / attn_k


# model_type of the HF config -> GGUF architecture. Only what we have verified with the parity check.
ARCHITECTURES: dict[str, _Arch] = {
    "llama": _Arch("llama", rotary_permuted=True),
    "qwen2": _Arch("qwen2", rotary_permuted=False),
}


def rotary_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the output rows of a q/k projection (or of its ``lora_B``) from HF's layout to the
    llama GGUF's: per head, the first and second halves of the rotary dimensions become interleaved.
    """
    out = rows.shape[0]
    if out % (2 * n_head):
        raise ExportError(f"a q/k projection with {out} output rows cannot be split into {n_head} heads")
    half = out // n_head // 2
    return rows.reshape(n_head, 2, half, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise ExportError(f"{path.parent} is not a {what}: it has no {path.name}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path} does not hold a JSON object")
    return data


def _check_adapter_config(config: dict, peft_dir: Path) -> tuple[int, float]:
    """Refuse every PEFT feature llama.cpp's plain LoRA cannot express; returns (r, alpha)."""
    if config.get("peft_type", "LORA") != "LORA":
        raise ExportError(f"{peft_dir} holds a {config.get('peft_type')} adapter; only LoRA can be exported")
    refusals = {
        "use_dora": "DoRA adapters",
        "use_rslora": "rsLoRA scaling (alpha/sqrt(r))",
        "rank_pattern": "per-module ranks (rank_pattern)",
        "alpha_pattern": "per-module alphas (alpha_pattern)",
        "modules_to_save": "fully trained modules (modules_to_save)",
        "trainable_token_indices": "trained token embeddings (trainable_token_indices)",
        "alora_invocation_tokens": "activated LoRA (alora_invocation_tokens)",
        "target_parameters": "LoRA on raw parameters (target_parameters)",
        "layer_replication": "layer replication",
        "lora_bias": "LoRA biases (lora_bias)",
    }
    for key, what in refusals.items():
        if config.get(key):
            raise ExportError(f"{peft_dir}: {what} cannot be exported to a GGUF LoRA")
    if config.get("bias", "none") != "none":
        raise ExportError(f"{peft_dir}: trained biases (bias={config['bias']!r}) cannot be exported")
    r, alpha = config.get("r"), config.get("lora_alpha")
    if not isinstance(r, int) or r <= 0 or not isinstance(alpha, int | float) or alpha <= 0:
        raise ExportError(f"{peft_dir}/{ADAPTER_CONFIG} needs a positive integer r and lora_alpha")
    return r, float(alpha)


def _base_arch(base_config: dict, base_hf_dir: Path) -> _Arch:
    model_type = base_config.get("model_type")
    arch = ARCHITECTURES.get(str(model_type))
    if arch is None:
        known = ", ".join(ARCHITECTURES)
        raise ExportError(
            f"base architecture {model_type!r} of {base_hf_dir} is not supported (known: {known})"
        )
    return arch


def _base_dims(base_config: dict) -> dict[str, int]:
    """The sizes of the base that the adapter's factors must match, from its config.json."""
    try:
        heads = int(base_config["num_attention_heads"])
        hidden = int(base_config["hidden_size"])
        return {
            "layers": int(base_config["num_hidden_layers"]),
            "hidden": hidden,
            "ffn": int(base_config["intermediate_size"]),
            "heads": heads,
            "kv_heads": int(base_config.get("num_key_value_heads") or heads),
            "head_dim": int(base_config.get("head_dim") or hidden // heads),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"the base config.json lacks a usable {exc} entry") from None


def _load_factors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of the adapter file as fp32 numpy arrays (bf16 included, hence through torch)."""
    if not path.is_file():
        raise ExportError(f"{path.parent} is not a PEFT adapter folder: it has no {path.name}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key).float().numpy() for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError) as exc:
        raise ExportError(f"{path} is not a readable safetensors file: {exc}") from None


def _gguf_tensors(
    factors: dict[str, np.ndarray], arch: _Arch, base_config: dict, r: int
) -> dict[str, np.ndarray]:
    """Map PEFT's ``<module>.lora_A/B.weight`` to ``<gguf weight>.lora_a/b`` with checked shapes."""
    import gguf

    dims = _base_dims(base_config)
    model_arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == arch.gguf_name)
    name_map = gguf.get_tensor_name_map(model_arch, dims["layers"])
    tensor = gguf.MODEL_TENSOR
    # The exportable weights and their (in, out): the attention and MLP projections. Embeddings and
    # the output head are left out on purpose (an embedding LoRA has another layout; a tied head
    # has no GGUF tensor of its own). The sizes refuse an adapter trained on another model here
    # rather than letting llama.cpp fail on it at load time.
    q_out, kv_out = dims["heads"] * dims["head_dim"], dims["kv_heads"] * dims["head_dim"]
    shapes = {
        tensor.ATTN_Q: (dims["hidden"], q_out),
        tensor.ATTN_K: (dims["hidden"], kv_out),
        tensor.ATTN_V: (dims["hidden"], kv_out),
        tensor.ATTN_OUT: (q_out, dims["hidden"]),
        tensor.FFN_GATE: (dims["hidden"], dims["ffn"]),
        tensor.FFN_UP: (dims["hidden"], dims["ffn"]),
        tensor.FFN_DOWN: (dims["ffn"], dims["hidden"]),
    }
    heads = {tensor.ATTN_Q: dims["heads"], tensor.ATTN_K: dims["kv_heads"]}

    pairs: dict[str, dict[str, np.ndarray]] = {}
    embeddings: set[str] = set()
    full_weights: list[str] = []  # modules_to_save, or embedding weights peft saved alongside
    for key, value in factors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            full_weights.append(key.removeprefix(PEFT_PREFIX))
            continue
        module = match["module"].removeprefix(PEFT_PREFIX)
        if match["embedding"]:
            embeddings.add(module)
        pairs.setdefault(module, {})[match["factor"]] = value

    out: dict[str, np.ndarray] = {}
    # Unmappable LoRA targets first: their message names the module the user asked peft to adapt.
    for module, pair in sorted(pairs.items()):
        found = name_map.get_type_and_name(module)
        if module in embeddings or found is None or found[0] not in shapes:
            raise ExportError(
                f"module {module} cannot be exported: only the attention and MLP projections "
                "(q/k/v/o/gate/up/down_proj) map to GGUF LoRA tensors"
            )
        kind, gguf_name = found
        if set(pair) != {"A", "B"}:
            raise ExportError(f"module {module} has lora_{''.join(pair)} but not both lora_A and lora_B")
        a, b = pair["A"], pair["B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != r or b.shape[1] != r:
            raise ExportError(
                f"module {module} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, expected rank {r}"
            )
        if (a.shape[1], b.shape[0]) != shapes[kind]:
            raise ExportError(
                f"module {module} maps {a.shape[1]} to {b.shape[0]} features but the base's maps "
                f"{shapes[kind][0]} to {shapes[kind][1]}: the adapter was trained on another model"
            )
        if arch.rotary_permuted and kind in heads:
            b = rotary_permute(b, heads[kind])
        out[f"{gguf_name}.weight.lora_a"] = np.ascontiguousarray(a)
        out[f"{gguf_name}.weight.lora_b"] = np.ascontiguousarray(b)
    if full_weights:
        raise ExportError(
            f"the adapter also holds full weights ({full_weights[0]}"
            f"{f' and {len(full_weights) - 1} more' if len(full_weights) > 1 else ''}), "
            "which a GGUF LoRA cannot carry"
        )
    if not out:
        raise ExportError("the adapter has no LoRA factors to export")
    return out


def export_gguf_lora(
    peft_dir: Path,
    base_hf_dir: Path,
    out_path: Path,
    *,
    dtype: str = "f32",
) -> Path:
    """Write the PEFT LoRA in ``peft_dir`` (trained on ``base_hf_dir``) as a GGUF LoRA at ``out_path``.

    ``dtype`` is ``"f32"`` (exact, and small anyway: 9.8 MB for r=8 on a 135M model) or ``"f16"``
    (half the size; llama.cpp's CPU matmul then also rounds the activations to f16). The file appears
    atomically: a failed export leaves nothing at ``out_path``.
    """
    import gguf

    peft_dir, base_hf_dir, out_path = Path(peft_dir), Path(base_hf_dir), Path(out_path)
    if not peft_dir.is_dir():
        raise ExportError(f"{peft_dir} is not a folder holding a PEFT adapter")
    if dtype not in ("f32", "f16"):
        raise ExportError(f"dtype must be 'f32' or 'f16', not {dtype!r}")
    config = _read_json(peft_dir / ADAPTER_CONFIG, "PEFT adapter folder")
    r, alpha = _check_adapter_config(config, peft_dir)
    base_config = _read_json(base_hf_dir / "config.json", "Hugging Face checkpoint")
    arch = _base_arch(base_config, base_hf_dir)
    tensors = _gguf_tensors(_load_factors(peft_dir / ADAPTER_WEIGHTS), arch, base_config, r)

    np_dtype = np.float32 if dtype == "f32" else np.float16
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}-", suffix=".partial", dir=out_path.parent)
    os.close(handle)
    try:
        writer = gguf.GGUFWriter(tmp_name, arch.gguf_name)
        try:
            writer.add_type(gguf.GGUFType.ADAPTER)
            writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
            writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
            writer.add_name(f"{peft_dir.name} (LoRA r={r})")
            for name, array in tensors.items():
                writer.add_tensor(name, array.astype(np_dtype))
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
        os.replace(tmp_name, out_path)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
    return out_path
