"""Test doubles shared by the tests: a tiny deterministic environment and scripted policies.

They exist for tests only; every user-facing path runs real environments and the real engine.
"""

from __future__ import annotations

from engine.backends.scripted import ScriptedBackend
from engine.envs.path_test import PathTestEnv
from engine.explorer import ExploreConfig, Explorer
from engine.store import Branch, Store

GUIDANCE_MARK = "Experience from an earlier attempt"


def act(letter: str, thought: str = "next letter") -> str:
    return f"<think>{thought}</think>\n<action>{letter}</action>"


def reflect(step: int | str, summary: str = "use the right letter") -> str:
    return f"<think>it went wrong</think>\n<rollback>{step}</rollback>\n<summary>{summary}</summary>"


def is_reflection(messages: list[dict[str, str]]) -> bool:
    return "<rollback>" in messages[-1]["content"]


def guided(messages: list[dict[str, str]]) -> bool:
    return any(GUIDANCE_MARK in m["content"] for m in messages if m["role"] == "user")


# --- Stage 2: a run whose rollback branch recovers (datasets, training) -----------------------

SUMMARY = "at step 2 write the letter b"


def help_for(env: str) -> str:
    assert env == "path"
    return PathTestEnv.action_help


def policy(word: str = "abc", wrong: str = "x", rollback_to: int = 2, note: str = ""):
    """Right letters, except ``wrong`` at step 2 unless guided; a failure reflection rolls back.

    ``note`` is added to every thought, so runs with different notes give different replies.
    """

    def reply(messages: list[dict[str, str]]) -> str:
        if is_reflection(messages):
            return reflect(rollback_to, SUMMARY)
        step = sum(1 for m in messages if m["role"] == "assistant") + 1
        if step == 2 and not guided(messages):
            return act(wrong)
        return act(word[step - 1], thought=f"letter {step}{note}")

    return reply


def explore_recovery(
    store: Store, reply=None, model: str = "scripted", **config
) -> tuple[int, ScriptedBackend]:
    """A run of ``path/abc``: the root fails at step 2, its reflection's branch recovers and succeeds.

    ``model`` is only the name recorded with the run (datasets take their tokenizer from it).
    """
    backend = ScriptedBackend(reply_fn=reply or policy())
    config.setdefault("budget", 2)
    run_id = Explorer(store, backend, PathTestEnv(), ExploreConfig(**config)).start("path/abc", model)
    return run_id, backend


def rollback_branch(store: Store, run_id: int) -> Branch:
    return next(b for b in store.branches(run_id) if b.kind == "rollback")


def write_adapter(path, *, kind: str = "adapter", adapter_type: str | None = "lora"):
    """A small GGUF LoRA adapter as leafe's exporter writes one (gguf-py), with two LoRA factors.

    Not a trained adapter: it passes the adapter checks, so flows that only pass files around can be
    tested without training one.
    """
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_type(kind)
    if adapter_type is not None:
        writer.add_string(gguf.Keys.Adapter.TYPE, adapter_type)
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, 16.0)
    writer.add_tensor("blk.0.attn_q.weight.lora_a", np.ones((4, 64), dtype=np.float32))
    writer.add_tensor("blk.0.attn_q.weight.lora_b", np.ones((64, 4), dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
