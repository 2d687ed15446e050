"""Sharing the cores among leafe's model processes: fair shares, dead and reused-pid claims, the note
for people, and two real llama.cpp models in one process taking half the cores each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from engine.cores import CoreShare, machine_cores
from engine.models import TEST_MODEL, cached_path


def test_each_live_claim_gets_its_fair_share(tmp_path: Path) -> None:
    first = CoreShare("llama.cpp", "a", folder=tmp_path, cores=4, refresh_s=0)
    assert first.threads() == 4 and first.sharing_note() is None
    second = CoreShare("torch", "b", folder=tmp_path, cores=4, refresh_s=0)
    assert first.threads() == second.threads() == 2
    assert [c.what for c in first.others()] == ["b"] and [c.what for c in second.others()] == ["a"]
    assert first.sharing_note() == "2 leafe model processes share 4 cores: this one uses 2 thread(s)"
    second.close()
    assert first.threads() == 4 and len(list(tmp_path.glob("*.json"))) == 1


def test_more_claims_than_cores_still_get_one_thread_and_a_warning(tmp_path: Path) -> None:
    shares = [CoreShare("llama.cpp", str(i), folder=tmp_path, cores=2, refresh_s=0) for i in range(3)]
    assert [s.threads() for s in shares] == [1, 1, 1]
    assert "all of them run slowly" in (shares[0].sharing_note() or "")


def test_claims_of_dead_or_reused_pids_are_ignored_and_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    (tmp_path / f"{dead_pid}-0.json").write_text(
        json.dumps({"pid": dead_pid, "started": None, "kind": "llama.cpp", "what": "gone"})
    )
    reused = tmp_path / "1-0.json"  # pid 1 lives, but was not started when this claim says
    reused.write_text(json.dumps({"pid": 1, "started": "not this one", "kind": "torch", "what": "old"}))
    (tmp_path / "garbage.json").write_text("{")
    share = CoreShare("llama.cpp", "me", folder=tmp_path, cores=2, refresh_s=0)
    assert share.threads() == 2 and share.others() == []
    assert not (tmp_path / f"{dead_pid}-0.json").exists() and not reused.exists()


def test_the_share_is_read_at_most_once_per_refresh(tmp_path: Path) -> None:
    first = CoreShare("llama.cpp", "a", folder=tmp_path, cores=2, refresh_s=3600)
    assert first.threads() == 2
    second = CoreShare("llama.cpp", "b", folder=tmp_path, cores=2)
    assert first.threads() == 2 and second.threads() == 1  # the first has not read the folder again
    first.refresh_s = 0
    assert first.threads() == 1


def test_a_read_only_folder_still_counts_this_process(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    share = CoreShare("llama.cpp", "me", folder=blocked / "cores", cores=2)
    assert share.threads() == 2 and len(share.claims()) == 1


@pytest.mark.real_model
def test_two_models_in_one_process_each_take_half_the_cores(tmp_path: Path, monkeypatch) -> None:
    path = cached_path(TEST_MODEL)
    if path is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    from engine.backends.llama import LlamaCppBackend

    monkeypatch.setenv("LEAFE_CORES_DIR", str(tmp_path))
    monkeypatch.setattr("engine.cores.REFRESH_S", 0.0)
    messages = [{"role": "user", "content": "Say hi."}]
    first = LlamaCppBackend(path, n_ctx=512)
    try:
        assert first.threads == machine_cores()
        second = LlamaCppBackend(path, n_ctx=512)
        try:
            first.complete(messages, temperature=0.0, max_tokens=4, seed=0)
            assert first.threads == second.threads == max(1, machine_cores() // 2)
            assert "2 leafe model processes share" in (first.sharing_note() or "")
        finally:
            second.close()
        first.complete(messages, temperature=0.0, max_tokens=4, seed=0)
        assert first.threads == machine_cores() and first.sharing_note() is None
    finally:
        first.close()
    assert not list(tmp_path.glob("*.json"))


def test_models_of_one_group_count_once(tmp_path: Path) -> None:
    """An actor and its reflection model in one process never decode together: one share for both."""
    actor = CoreShare("llama.cpp", "actor", folder=tmp_path, cores=2, refresh_s=0, group="explore")
    reflector = CoreShare("llama.cpp", "reflector", folder=tmp_path, cores=2, refresh_s=0, group="explore")
    assert actor.threads() == reflector.threads() == 2 and actor.sharing_note() is None
    other = CoreShare("llama.cpp", "other", folder=tmp_path, cores=2, refresh_s=0)
    assert actor.threads() == other.threads() == 1
    for share in (actor, reflector, other):
        share.close()
