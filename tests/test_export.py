"""The GGUF LoRA exporter, judged by behaviour: llama.cpp loads the file, the adapter changes what the
model says, and teacher-forced top-1 predictions of llama.cpp + GGUF LoRA match transformers + peft
about as well as the two engines match without any adapter (the Q4 quantisation floor).

The adapter is built here on SmolLM2-135M (llama architecture, so q/k need the rotary row
reordering) with random non-zero ``lora_B`` factors: an untrained LoRA has ``lora_B = 0`` and would
make any export, right or wrong, look perfect.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from trainer import gguf_lora
from trainer.gguf_lora import ExportError, export_gguf_lora, rotary_permute

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
RANK, ALPHA = 8, 16
LORA_B_STD = 0.2  # large enough that the adapter changes ~40 % of the top-1 predictions
SEED = 0

CONVERSATIONS = [
    (
        "Write a Python function that returns the sum of a list of numbers.",
        "Here is a simple function:\n\ndef total(numbers):\n    result = 0\n    for n in numbers:\n"
        "        result += n\n    return result\n\nIt walks over the list and adds each number to the "
        "running total, then returns it. An empty list gives 0. Python also has the built-in sum(), "
        "which does the same in one call: sum([1, 2, 3]) returns 6.",
    ),
    (
        "What is the capital of France, and why is it famous?",
        "The capital of France is Paris. It is famous for the Eiffel Tower, the Louvre museum, its cafes, "
        "fashion and a long history as a centre of art, science and politics. The river Seine runs "
        "through the city, and millions of visitors come every year to walk along its banks.",
    ),
    (
        "Move the box onto the target. The player stands left of the box and the target is right of it.",
        "I will push the box to the right: the player moves right, the box slides one cell and lands on "
        "the target. Moving up or down first would waste a step, and pushing from the other side is "
        "impossible because the box would move away from the target. Action: right",
    ),
]


def test_rotary_permute_interleaves_the_halves_of_each_head() -> None:
    rows = np.arange(8).reshape(8, 1)  # 2 heads of 4 rotary rows: (0 1 | 2 3), (4 5 | 6 7)
    assert rotary_permute(rows, 2).ravel().tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    with pytest.raises(ExportError):
        rotary_permute(np.zeros((6, 2)), 2)


# ------------------------------------------------------------------------------ real model fixtures


@pytest.fixture(scope="module")
def gguf_model() -> Path:
    from engine.models import cached_path

    path = cached_path("smollm2-135m")
    if path is None:
        pytest.skip("smollm2-135m is not downloaded (leafe models pull smollm2-135m)")
    pytest.importorskip("peft")
    pytest.importorskip("llama_cpp")
    return path


@pytest.fixture(scope="module")
def base_hf_dir(gguf_model: Path) -> Path:
    from trainer.base_model import resolve_base

    return resolve_base("smollm2-135m").hf_dir


def _save_adapter(base_hf_dir: Path, out: Path, targets: list[str], std: float = LORA_B_STD) -> Path:
    """A PEFT LoRA on the base with seeded random factors (lora_A by peft's init, lora_B by us)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(str(base_hf_dir), dtype=torch.float32)
    config = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def peft_dir(base_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_adapter(base_hf_dir, tmp_path_factory.mktemp("peft") / "adapter", TARGETS)


@pytest.fixture(scope="module")
def exported(peft_dir: Path, base_hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_gguf_lora(peft_dir, base_hf_dir, tmp_path_factory.mktemp("gguf") / "adapter.gguf")


def _chat_samples(base_hf_dir: Path) -> list[tuple[list[int], int]]:
    """The conversations as (token ids, first response token) with the base's own chat template."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_hf_dir))

    def ids(messages: list[dict], **kwargs) -> list[int]:
        encoded = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
        return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)

    out = []
    for question, answer in CONVERSATIONS:
        prompt = ids([{"role": "user", "content": question}], add_generation_prompt=True)
        full = ids([{"role": "user", "content": question}, {"role": "assistant", "content": answer}])
        assert full[: len(prompt)] == prompt
        out.append((full, len(prompt)))
    return out


@pytest.fixture(scope="module")
def samples(base_hf_dir: Path) -> list[tuple[list[int], int]]:
    return _chat_samples(base_hf_dir)


@pytest.fixture(scope="module")
def parity(base_hf_dir: Path, peft_dir: Path, gguf_model: Path, exported: Path, samples):
    from trainer.parity import adapter_parity

    return adapter_parity(base_hf_dir, peft_dir, gguf_model, exported, samples)


# ------------------------------------------------------------------------------------ real model tests


@pytest.mark.real_model
def test_export_writes_an_adapter_gguf(exported: Path) -> None:
    import gguf

    reader = gguf.GGUFReader(exported)
    fields = {name: reader.get_field(name) for name in reader.fields}
    assert fields["general.architecture"].contents() == "llama"
    assert fields["general.type"].contents() == "adapter"
    assert fields["adapter.type"].contents() == "lora"
    assert fields["adapter.lora.alpha"].contents() == pytest.approx(ALPHA)
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == 30 * len(TARGETS) * 2
    # numpy (r, in) / (out, r) appear in GGML order: ne = (in, r) / (r, out)
    assert tensors["blk.0.attn_k.weight.lora_a"].shape.tolist() == [576, RANK]
    assert tensors["blk.0.attn_k.weight.lora_b"].shape.tolist() == [RANK, 192]
    assert tensors["blk.29.ffn_down.weight.lora_b"].shape.tolist() == [RANK, 576]


@pytest.mark.real_model
def test_llama_cpp_loads_the_lora_and_it_changes_the_answer(gguf_model: Path, exported: Path) -> None:
    from engine.backends.llama import LlamaCppBackend

    messages = [{"role": "user", "content": "Name three colours of the rainbow."}]
    answers = []
    for lora in (None, exported):
        backend = LlamaCppBackend(gguf_model, n_ctx=512, n_threads=2, lora_path=lora)
        try:
            answers.append(backend.complete(messages, temperature=0.0, max_tokens=16, seed=1).text)
        finally:
            backend.close()
    assert answers[0].strip() and answers[1].strip()
    assert answers[0] != answers[1]


@pytest.mark.real_model
def test_parity_with_the_adapter_is_close_to_the_quantisation_floor(parity) -> None:
    assert parity.positions > 150
    assert parity.adapter_effect > 0.2  # the adapter really changes predictions, so parity means something
    assert parity.base_agreement > 0.9
    assert parity.agreement >= parity.base_agreement - 0.1
    assert parity.agreement > 0.85


@pytest.mark.real_model
def test_parity_catches_a_missing_rotary_permutation(
    base_hf_dir: Path, peft_dir: Path, gguf_model: Path, samples, parity, tmp_path: Path, monkeypatch
) -> None:
    from trainer.parity import adapter_parity

    monkeypatch.setattr(gguf_lora, "rotary_permute", lambda rows, n_head: rows)
    broken = export_gguf_lora(peft_dir, base_hf_dir, tmp_path / "broken.gguf")
    result = adapter_parity(base_hf_dir, peft_dir, gguf_model, broken, samples)
    assert result.base_agreement == parity.base_agreement
    assert result.agreement < parity.agreement - 0.1


@pytest.mark.real_model
def test_qwen2_exports_without_the_rotary_permutation(tmp_path: Path) -> None:
    """Qwen2 GGUFs keep HF's q/k row order. Runs only where the Qwen base is already converted
    (converting it takes a minute); ~20 s on two cores."""
    from engine.models import ModelError, cached_path
    from trainer.base_model import resolve_base
    from trainer.parity import adapter_parity

    if cached_path("qwen2.5-coder-0.5b") is None:
        pytest.skip("qwen2.5-coder-0.5b is not downloaded")
    try:
        base = resolve_base("qwen2.5-coder-0.5b", convert=False)
    except ModelError:
        pytest.skip("the Qwen base has not been converted for training yet")
    # Qwen's wider layers need smaller factors than SmolLM2's for a similar effect.
    adapter = _save_adapter(base.hf_dir, tmp_path / "qwen", TARGETS, std=0.03)
    exported = export_gguf_lora(adapter, base.hf_dir, tmp_path / "qwen.gguf")
    result = adapter_parity(base.hf_dir, adapter, base.gguf, exported, _chat_samples(base.hf_dir))
    assert result.adapter_effect > 0.1
    assert result.agreement >= result.base_agreement - 0.05


# ------------------------------------------------------------------------------------------ refusals


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


@pytest.mark.real_model
def test_a_folder_without_adapter_config_is_refused(base_hf_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportError) as exc:
        export_gguf_lora(tmp_path, base_hf_dir, tmp_path / "out.gguf")
    assert "adapter_config.json" in _one_line(exc)
    with pytest.raises(ExportError) as exc:
        export_gguf_lora(tmp_path / "missing", base_hf_dir, tmp_path / "out.gguf")
    _one_line(exc)
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.real_model
def test_an_adapter_on_lm_head_is_refused(base_hf_dir: Path, tmp_path: Path) -> None:
    adapter = _save_adapter(base_hf_dir, tmp_path / "head", ["q_proj", "lm_head"])
    with pytest.raises(ExportError) as exc:
        export_gguf_lora(adapter, base_hf_dir, tmp_path / "out.gguf")
    assert "lm_head" in _one_line(exc)
    assert not (tmp_path / "out.gguf").exists()
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.real_model
@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("use_dora", True, "DoRA"),
        ("use_rslora", True, "rsLoRA"),
        ("rank_pattern", {"q_proj": 4}, "rank_pattern"),
        ("alpha_pattern", {"q_proj": 4}, "alpha_pattern"),
        ("modules_to_save", ["lm_head"], "modules_to_save"),
    ],
)
def test_unsupported_peft_features_are_refused(
    peft_dir: Path, base_hf_dir: Path, tmp_path: Path, key: str, value, words: str
) -> None:
    adapter = tmp_path / "adapter"
    shutil.copytree(peft_dir, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config[key] = value
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError) as exc:
        export_gguf_lora(adapter, base_hf_dir, tmp_path / "out.gguf")
    assert words in _one_line(exc)


@pytest.mark.real_model
def test_an_unsupported_base_architecture_is_refused(
    peft_dir: Path, base_hf_dir: Path, tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    config = json.loads((base_hf_dir / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(ExportError) as exc:
        export_gguf_lora(peft_dir, base, tmp_path / "out.gguf")
    assert "gpt2" in _one_line(exc)


@pytest.mark.real_model
def test_an_adapter_for_another_model_is_refused(peft_dir: Path, base_hf_dir: Path, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    config = json.loads((base_hf_dir / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "intermediate_size": 2048}))
    with pytest.raises(ExportError) as exc:
        export_gguf_lora(peft_dir, base, tmp_path / "out.gguf")
    assert "another model" in _one_line(exc)
