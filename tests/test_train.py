"""Stage-2 training on CPU with the real SmolLM2 base: loss, export, resume, background, cancel.

The dataset comes from a real rollback tree (scripted policy on the test environment); the base is
the real SmolLM2-135M GGUF converted to an HF checkpoint; the adapter is loaded by real llama.cpp.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.models import TEST_MODEL, cached_path
from engine.store import Store
from tests.doubles import explore_recovery, help_for, rollback_branch
from trainer.dataset import DatasetSettings, build_dataset, read_dataset
from trainer.jobs import cancel, create_job, prepare_resume, start_background
from trainer.train import TrainConfig, TrainError, choose_method, cuda_available, run_job

pytestmark = pytest.mark.real_model

# Small and fast, but strong enough to memorise a two-example dataset in a few steps.
FAST = dict(rank=8, lr=3e-3, grad_accum=1, dropout=0.0, eval_fraction=0.0, threads=2)


@pytest.fixture(scope="module", autouse=True)
def base_model() -> None:
    if cached_path(TEST_MODEL) is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded (`leafe models pull {TEST_MODEL}`)")
    from trainer.base_model import resolve_base

    resolve_base(TEST_MODEL)  # converted once per cache, ~20 s the first time


def make_dataset(tmp_path: Path) -> tuple[Store, int]:
    store = Store(tmp_path / "leafe.db")
    run_id, _ = explore_recovery(store, model=TEST_MODEL)
    store.set_review(rollback_branch(store, run_id).id, "approved")
    settings = DatasetSettings(cf_suffix=True, rehearsal_fraction=1.0)
    dataset_id, _ = build_dataset(store, settings, tmp_path / "data.jsonl", action_help=help_for)
    return store, dataset_id


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One full job through the CLI: dataset, LoRA steps, GGUF export, parity check."""
    from leafe_tui.cli import app

    tmp = tmp_path_factory.mktemp("trained")
    store, dataset_id = make_dataset(tmp)
    args = ["train", "--dataset", str(dataset_id), "--db", str(store.path), "--lora", "--json"]
    args += ["--max-steps", "8", "--rank", "8", "--lr", "3e-3", "--grad-accum", "1", "--eval-fraction", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    job = json.loads(result.stdout[result.stdout.index("{") :])
    return {"store": store, "job": job, "dataset_id": dataset_id, "tmp": tmp}


def test_a_few_lora_steps_lower_the_training_loss(trained) -> None:
    store, job = trained["store"], trained["job"]
    assert job["status"] == "done" and job["method"] == "lora" and job["base"] == TEST_MODEL
    losses = [m["loss"] for m in store.metrics(job["id"], "train")]
    assert [m["step"] for m in store.metrics(job["id"], "train")] == list(range(1, 9))
    assert losses[-1] < 0.5 * losses[0]
    assert all(m["tokens_per_s"] > 0 for m in store.metrics(job["id"], "train"))


def test_adapter_keeps_its_lineage_down_to_the_nodes(trained) -> None:
    store, job = trained["store"], trained["job"]
    (adapter,) = store.adapters()
    assert adapter["job_id"] == job["id"] and adapter["dataset_id"] == trained["dataset_id"]
    node_ids = {n for e in store.dataset_examples(adapter["dataset_id"]) for n in e["trained_node_ids"]}
    assert node_ids and all(store.node(n).valid for n in node_ids)
    # the parity check ran on real llama.cpp and agrees about as well as the base model does
    assert adapter["parity_positions"] > 0
    assert adapter["parity"] >= adapter["parity_base"] - 0.1


def test_llama_cpp_loads_the_adapter_and_its_greedy_reply_changes(trained) -> None:
    from engine.backends.llama import LlamaCppBackend

    store = trained["store"]
    (adapter,) = store.adapters()
    records = read_dataset(Path(store.dataset(trained["dataset_id"])["path"]))
    record = next(r for r in records if r["kind"] == "cf")
    first_trained = next(i for i, m in enumerate(record["messages"]) if m.get("training"))
    prompt = [{"role": m["role"], "content": m["content"]} for m in record["messages"][:first_trained]]
    replies = {}
    for name, lora in (("base", None), ("adapter", adapter["gguf_path"])):
        backend = LlamaCppBackend(cached_path(TEST_MODEL), n_ctx=2048, lora_path=lora)
        try:
            replies[name] = backend.complete(prompt, temperature=0.0, max_tokens=24, seed=0).text
        finally:
            backend.close()
    # the adapter learnt the trained reply, which the base model does not give
    target = record["messages"][first_trained]["content"]
    assert replies["adapter"] == target and replies["base"] != target


def test_resume_continues_from_the_checkpoint_exactly(tmp_path: Path) -> None:
    store, dataset_id = make_dataset(tmp_path)
    config = TrainConfig(max_steps=4, checkpoint_every=2, parity_samples=0, **FAST)
    straight = create_job(store, str(dataset_id), TEST_MODEL, "lora", config)
    run_job(store, straight)
    interrupted = create_job(store, str(dataset_id), TEST_MODEL, "lora", config)

    def cancel_after_two(row: dict) -> None:
        if row["step"] == 2:
            store.request_cancel(interrupted)

    assert run_job(store, interrupted, progress=cancel_after_two)["status"] == "cancelled"
    assert store.job(interrupted)["step"] == 2
    prepare_resume(store, interrupted)
    assert run_job(store, interrupted)["status"] == "done"
    expected = [(m["step"], m["loss"]) for m in store.metrics(straight, "train")]
    resumed = [(m["step"], m["loss"]) for m in store.metrics(interrupted, "train")]
    assert [s for s, _ in resumed] == [1, 2, 3, 4]  # no step twice, none lost
    assert resumed == pytest.approx(expected, rel=1e-4)  # same order of examples, same weights


def test_a_cancelled_background_job_ends_cancelled_and_resumable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a relative --db path, as a person types it
    store, dataset_id = make_dataset(Path("."))
    config = TrainConfig(max_steps=500, checkpoint_every=500, parity_samples=0, **FAST)
    job_id = create_job(store, str(dataset_id), TEST_MODEL, "lora", config)
    pid = start_background(store, job_id)
    deadline = time.monotonic() + 240
    while store.job(job_id)["step"] < 1:
        row = store.job(job_id)
        assert row["effective_status"] in ("queued", "running"), row
        assert time.monotonic() < deadline, "the worker made no step"
        time.sleep(0.5)
    assert store.job(job_id)["pid"] == pid
    cancel(store, job_id)
    while store.job(job_id)["effective_status"] == "running":
        assert time.monotonic() < deadline, "the worker did not stop"
        time.sleep(0.5)
    row = store.job(job_id)
    assert row["status"] == "cancelled" and 1 <= row["step"] < 500
    assert (Path(row["out_dir"]) / "checkpoint" / "position.json").is_file()
    assert prepare_resume(store, job_id)["status"] == "queued"


def test_qlora_without_a_gpu_is_a_clear_error() -> None:
    if cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    with pytest.raises(TrainError, match="QLoRA needs a CUDA GPU"):
        choose_method("qlora")
    assert choose_method("auto") == "lora"


def test_qlora_trains_on_a_cuda_gpu(tmp_path: Path) -> None:
    from trainer.train import bitsandbytes_available

    if not (cuda_available() and bitsandbytes_available()):
        pytest.skip("QLoRA needs a CUDA GPU and bitsandbytes")
    store, dataset_id = make_dataset(tmp_path)
    config = TrainConfig(max_steps=6, parity_samples=0, **FAST)
    job_id = create_job(store, str(dataset_id), TEST_MODEL, "qlora", config)
    row = run_job(store, job_id)
    losses = [m["loss"] for m in store.metrics(job_id, "train")]
    assert row["status"] == "done" and row["method"] == "qlora" and losses[-1] < losses[0]


def test_trimmed_vocabulary_projection_gives_the_same_loss(tmp_path: Path) -> None:
    import torch

    from trainer.base_model import resolve_base
    from trainer.train import collate, load_model, prepare_items, template_for, token_losses

    store, dataset_id = make_dataset(tmp_path)
    base = resolve_base(TEST_MODEL)
    config = TrainConfig(**FAST)
    records = read_dataset(Path(store.dataset(dataset_id)["path"]))
    items, _ = prepare_items(records, template_for(base), config)
    model, device = load_model(base.hf_dir, "lora", config)
    model.eval()
    batch = collate(items, pad_id=0, device=device)  # both examples, right-padded
    with torch.no_grad():
        trimmed, _, trimmed_mask = token_losses(model, batch, trim=True)
        full, _, full_mask = token_losses(model, batch, trim=False)
    assert trimmed.shape[1] < full.shape[1]  # the context before the first trained token was skipped
    assert trimmed_mask.sum() == full_mask.sum() > 0
    assert (trimmed * trimmed_mask).sum() == pytest.approx(float((full * full_mask).sum()), rel=1e-4)


def test_an_hf_checkpoint_base_masks_identically_and_trains(tmp_path: Path) -> None:
    from engine.chat_template import GgufChatTemplate
    from trainer.base_model import resolve_base
    from trainer.masking import HfChatTemplate, tokenize_chat

    store, dataset_id = make_dataset(tmp_path)
    hf_dir = resolve_base(TEST_MODEL).hf_dir
    records = read_dataset(Path(store.dataset(dataset_id)["path"]))
    gguf, hf = GgufChatTemplate.from_gguf(cached_path(TEST_MODEL)), HfChatTemplate(hf_dir)
    for record in records:  # the converted tokenizer and template give the engine's very tokens
        assert tokenize_chat(record["messages"], hf) == tokenize_chat(record["messages"], gguf)

    config = TrainConfig(max_steps=2, **FAST)
    job_id = create_job(store, str(dataset_id), str(hf_dir), "lora", config)
    row = run_job(store, job_id)
    (adapter,) = store.adapters()
    assert row["status"] == "done" and adapter["base_gguf"] is None and adapter["parity"] is None
    assert Path(adapter["gguf_path"]).is_file()  # exported all the same, for a GGUF of that model


def test_explore_runs_with_the_adapter_and_records_it(trained) -> None:
    from leafe_tui.cli import app

    store = trained["store"]
    (adapter,) = store.adapters()
    db = str(store.path)
    wrong = CliRunner().invoke(
        app,
        [
            "explore",
            "sokoban/fixed-1",
            "--model",
            "qwen2.5-coder-0.5b",
            "--adapter",
            str(adapter["id"]),
            "--db",
            db,
        ],
    )
    assert wrong.exit_code == 2 and f"trained on {TEST_MODEL}" in wrong.output
    args = ["explore", "sokoban/fixed-1", "--adapter", str(adapter["id"]), "--db", db, "--budget", "1"]
    result = CliRunner().invoke(app, [*args, "--max-tokens", "40", "--n-ctx", "4096", "--json"])
    assert result.exit_code == 0, result.output
    (tree,) = json.loads(result.stdout[result.stdout.index("[") :])
    assert tree["run"]["model"] == TEST_MODEL  # the adapter's base, since --model was not given
    assert tree["run"]["config"]["adapter"] == adapter["gguf_path"]
    assert len(tree["nodes"]) > 1
