"""Stage-2 datasets from real rollback trees (scripted policy, test environment) and their loss masks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.models import TEST_MODEL, cached_path
from engine.prompts import GUIDANCE_HEADER
from engine.store import Store
from tests.doubles import SUMMARY, explore_recovery, guided, help_for, policy, rollback_branch
from trainer.dataset import DatasetError, DatasetSettings, build_dataset, collect_examples, read_dataset


def build(store: Store, tmp_path: Path, **settings):
    return build_dataset(store, DatasetSettings(**settings), tmp_path / "d.jsonl", action_help=help_for)


def test_unapproved_branches_give_nothing_and_the_error_says_why(store: Store, tmp_path: Path) -> None:
    explore_recovery(store)
    with pytest.raises(DatasetError, match="not approved.*leafe review"):
        build(store, tmp_path)


def test_counterfactual_is_the_original_history_without_the_summary(store: Store, tmp_path: Path) -> None:
    run_id, backend = explore_recovery(store)
    branch = rollback_branch(store, run_id)
    store.set_review(branch.id, "approved")
    dataset_id, counts = build(store, tmp_path)
    assert (counts["counterfactual"], counts["rehearsal"]) == (1, 1)

    records = read_dataset(tmp_path / "d.jsonl")
    cf = next(r for r in records if r["kind"] == "cf")
    # the context is exactly the prompt the root episode saw before its wrong step 2
    root_step2_prompt = next(p for p in backend.prompts if sum(m["role"] == "assistant" for m in p) == 1)
    context = [{"role": m["role"], "content": m["content"]} for m in cf["messages"][:-1]]
    assert context == root_step2_prompt and not guided(root_step2_prompt)
    target = cf["messages"][-1]
    first = store.branch_nodes(branch.id)[0]
    assert target == {"role": "assistant", "content": first.raw_response, "training": True}
    assert not any(m["training"] for m in cf["messages"][:-1])
    assert cf["lineage"]["trained_node_ids"] == [first.id]
    assert cf["lineage"]["branch_id"] == branch.id

    # the summary, which was in the branch's prompts, is in no example
    assert any(SUMMARY in m["content"] for p in backend.prompts for m in p)
    for record in records:
        for message in record["messages"]:
            assert SUMMARY not in message["content"] and GUIDANCE_HEADER not in message["content"]

    # the rehearsal example is the successful trajectory, every reply trained
    reh = next(r for r in records if r["kind"] == "reh")
    replies = [m for m in reh["messages"] if m["role"] == "assistant"]
    assert [json.dumps(m["training"]) for m in replies] == ["true"] * 3
    assert "<action>x</action>" not in json.dumps(reh["messages"])

    # the store keeps the lineage of each line
    lines = store.dataset_examples(dataset_id)
    assert [(e["kind"], e["trained_node_ids"]) for e in lines] == [
        (r["kind"], r["lineage"]["trained_node_ids"]) for r in records
    ]
    recorded = store.dataset(dataset_id)
    assert recorded["counts"]["examples"] == 2 and recorded["settings"]["selection"] == "approved"


def test_suffix_option_trains_the_whole_corrected_suffix(store: Store, tmp_path: Path) -> None:
    run_id, _ = explore_recovery(store)
    store.set_review(rollback_branch(store, run_id).id, "approved")
    _, counts = build(store, tmp_path, cf_suffix=True, rehearsal_fraction=0.0)
    (cf,) = read_dataset(tmp_path / "d.jsonl")
    flags = [m["training"] for m in cf["messages"] if m["role"] == "assistant"]
    assert flags == [False, True, True] and len(cf["lineage"]["trained_node_ids"]) == 2


def test_rejected_never_enters_and_all_successful_takes_pending(store: Store, tmp_path: Path) -> None:
    run_id, _ = explore_recovery(store)
    examples, _ = collect_examples(store, DatasetSettings(selection="successful"), help_for)
    assert sorted(e.kind for e in examples) == ["cf", "reh"]
    store.set_review(rollback_branch(store, run_id).id, "rejected")
    examples, counts = collect_examples(store, DatasetSettings(selection="successful"), help_for)
    assert examples == [] and counts.skipped["rejected"] >= 1


def test_a_correction_identical_to_the_original_reply_is_skipped(store: Store, tmp_path: Path) -> None:
    # the reflection blames step 1, whose reply the branch repeats; its step 2 is then guided and right
    run_id, _ = explore_recovery(store, policy(rollback_to=1))
    store.set_review(rollback_branch(store, run_id).id, "approved")
    examples, counts = collect_examples(store, DatasetSettings(), help_for)
    assert [e.kind for e in examples] == ["reh"]
    assert counts.skipped["corrected reply same as the original"] == 1


def test_per_task_limits_and_duplicates(store: Store, tmp_path: Path) -> None:
    for note in ("", " (sure)", " (certain)", ""):  # four runs; the first and the last are identical
        run_id, _ = explore_recovery(store, policy(note=note))
        store.set_review(rollback_branch(store, run_id).id, "approved")
    settings = DatasetSettings(cf_per_task=2, rehearsal_fraction=1.0)
    examples, counts = collect_examples(store, settings, help_for)
    # three distinct recoveries and one repeat: three rehearsal examples, three distinct
    # counterfactuals of which two are kept
    assert counts.branch_points == 4
    assert counts.skipped["duplicate trajectory"] == 1 and counts.skipped["duplicate counterfactual"] == 1
    assert sorted(e.kind for e in examples) == ["cf", "cf", "reh", "reh", "reh"]
    again, _ = collect_examples(store, settings, help_for)
    assert [e.run_id for e in again] == [e.run_id for e in examples]  # deterministic for a seed


def test_bad_files_and_settings_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no dataset file"):
        read_dataset(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: no assistant message"):
        read_dataset(bad)
    bad.write_text("not json\n")
    with pytest.raises(DatasetError, match=r"bad.jsonl:1: not JSON"):
        read_dataset(bad)
    with pytest.raises(DatasetError, match="between 0 and 1"):
        DatasetSettings(rehearsal_fraction=2)


@pytest.fixture(scope="module")
def template():
    from engine.chat_template import GgufChatTemplate

    path = cached_path(TEST_MODEL)
    if path is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded (`leafe models pull {TEST_MODEL}`)")
    return GgufChatTemplate.from_gguf(path)


@pytest.mark.real_model
def test_mask_is_exactly_the_response_token_by_token(store: Store, tmp_path: Path, template) -> None:
    from trainer.masking import tokenize_chat

    run_id, _ = explore_recovery(store)
    store.set_review(rollback_branch(store, run_id).id, "approved")
    build(store, tmp_path, cf_suffix=True)
    for record in read_dataset(tmp_path / "d.jsonl"):
        messages = record["messages"]
        tokens = tokenize_chat(messages, template)
        spans = tokens.spans()
        trained_turns = [i for i, m in enumerate(messages) if m["role"] == "assistant" and m["training"]]
        assert len(spans) == len(trained_turns) > 0
        eos = template.piece(template.llm.token_eos())
        for (start, end), index in zip(spans, trained_turns, strict=True):
            # the context is the prompt the engine builds for that step; the span is the reply and
            # the end-of-turn token, nothing more
            prompt = template.encode(template.render(messages[:index], add_generation_prompt=True))
            assert tokens.input_ids[:start] == prompt
            assert tokens.input_ids[start:end] == template.encode(messages[index]["content"] + eos)
        text = "".join(template.piece(t) for t in tokens.input_ids)
        assert SUMMARY not in text and GUIDANCE_HEADER not in text
