"""The Stage-2 verbs end to end on a real database: review, dataset build/list/show, jobs, adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import trainer.dataset
from engine.models import TEST_MODEL, cached_path
from engine.store import Store
from leafe_tui.cli import app
from tests.doubles import SUMMARY, explore_recovery, help_for, rollback_branch

runner = CliRunner()


@pytest.fixture
def db(tmp_path: Path, monkeypatch) -> Path:
    """A database with one run whose rollback branch recovered (not yet reviewed)."""
    monkeypatch.setattr(trainer.dataset, "env_action_help", help_for)  # the test env is not registered
    path = tmp_path / "leafe.db"
    store = Store(path)
    explore_recovery(store, model=TEST_MODEL)
    store.close()
    return path


def invoke(*args: str):
    return runner.invoke(app, list(args))


def branch_id(db: Path) -> int:
    store = Store(db)
    try:
        return rollback_branch(store, 1).id
    finally:
        store.close()


def test_review_then_build_list_and_show(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "data.jsonl"
    refused = invoke("dataset", "build", "--out", str(out), "--db", str(db))
    assert refused.exit_code == 2 and "not approved" in refused.output and not out.exists()

    reviewed = invoke("review", str(branch_id(db)), "--db", str(db))
    assert reviewed.exit_code == 0, reviewed.output
    built = invoke("dataset", "build", "--out", str(out), "--db", str(db), "--json")
    assert built.exit_code == 0, built.output
    data = json.loads(built.stdout)
    assert data["counts"]["counterfactual"] == 1 and out.is_file()

    listed = json.loads(invoke("dataset", "list", "--db", str(db), "--json").stdout)
    assert [d["id"] for d in listed] == [data["id"]]

    if cached_path(TEST_MODEL) is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    shown = invoke("dataset", "show", str(data["id"]), "--db", str(db), "--json")
    assert shown.exit_code == 0, shown.output
    examples = json.loads(shown.stdout)
    cf = next(e for e in examples if e["kind"] == "cf")
    assert cf["trained_text"] == ["<think>letter 2</think>\n<action>b</action><|im_end|>"]
    text = invoke("dataset", "show", str(out), "--context", "0")  # a file works too; the human view
    assert text.exit_code == 0 and "✓ no experience summary in the context" in text.stdout
    assert SUMMARY not in text.stdout


def test_rejected_branch_leaves_nothing_even_with_all_successful(db: Path, tmp_path: Path) -> None:
    assert invoke("review", str(branch_id(db)), "--set", "rejected", "--db", str(db)).exit_code == 0
    out = str(tmp_path / "d.jsonl")
    result = invoke("dataset", "build", "--out", out, "--all-successful", "--db", str(db))
    assert result.exit_code == 2 and "rejected" in result.output


def test_jobs_list_show_and_cancel_a_queued_job(db: Path, tmp_path: Path) -> None:
    store = Store(db)
    job = store.create_job(dataset_id=None, dataset_path="d.jsonl", base=TEST_MODEL, method="lora", config={})
    store.add_metric(job, "train", 1, 2.0, tokens=100, tokens_per_s=50.0)
    store.add_metric(job, "train", 2, 1.5, tokens=100, tokens_per_s=50.0)
    store.close()
    rows = json.loads(invoke("jobs", "--db", str(db), "--json").stdout)
    assert [(r["id"], r["effective_status"]) for r in rows] == [(job, "queued")]
    shown = invoke("jobs", "show", str(job), "--db", str(db))
    assert shown.exit_code == 0 and "train loss 2.000 → 1.500" in shown.stdout
    cancelled = invoke("jobs", "cancel", str(job), "--db", str(db))
    assert cancelled.exit_code == 0 and "cancelled" in cancelled.stdout
    assert Store(db).job(job)["status"] == "cancelled"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("review", "999"), "no branch 999"),
        (("review", "1", "--set", "maybe"), "review must be one of"),
        (("dataset", "show", "/nonexistent.jsonl"), "no dataset file"),
        (("dataset", "show", "42"), "no dataset 42"),
        (("train",), "give --dataset"),
        (("train", "--dataset", "/nonexistent.jsonl"), "no dataset file"),
        (("train", "--resume", "7"), "no training job 7"),
        (("jobs", "show", "7"), "no training job 7"),
        (("explore", "sokoban/fixed-1", "--adapter", "3"), "no adapter 3"),
    ],
)
def test_stage2_mistakes_are_one_line_errors(db: Path, args: tuple[str, ...], expected: str) -> None:
    result = invoke(*args, "--db", str(db))
    assert result.exit_code == 2, result.output
    assert expected in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_qlora_without_a_gpu_is_refused_before_any_job(db: Path, tmp_path: Path) -> None:
    from trainer.train import cuda_available

    if cuda_available():
        pytest.skip("this machine has a CUDA GPU")
    assert invoke("review", str(branch_id(db)), "--db", str(db)).exit_code == 0
    out = tmp_path / "d.jsonl"
    assert invoke("dataset", "build", "--out", str(out), "--db", str(db)).exit_code == 0
    result = invoke("train", "--dataset", str(out), "--qlora", "--db", str(db))
    assert result.exit_code == 2 and "QLoRA needs a CUDA GPU" in result.output
    assert Store(db).jobs() == []
