"""Test doubles shared by the tests: a tiny deterministic environment and scripted policies.

They exist for tests only; every user-facing path runs real environments and the real engine.
"""

from __future__ import annotations

import json

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


# --- a served model: an OpenAI-compatible chat server on a loopback port ----------------------


class ChatServerDouble:
    """A tiny OpenAI-compatible chat server (a test double) answering with ``reply_fn(messages)``.

    ``failures`` is a list of HTTP statuses answered, in order, before any real answer (to test
    retries); ``die_after`` shuts the server down after that many answered chat calls (a server
    that goes away mid-run). ``requests`` keeps every chat request body; ``owned_by`` is what
    ``/v1/models`` says of the model, which names the server kind.
    """

    def __init__(
        self,
        reply_fn,
        *,
        model: str = "double",
        owned_by: str = "me",
        failures: list[int] | None = None,
        die_after: int | None = None,
        usage_extra: dict | None = None,
        port: int = 0,
        with_seed: bool = False,
    ) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.reply_fn, self.model, self.owned_by = reply_fn, model, owned_by
        self.failures = list(failures or [])
        self.die_after = die_after
        self.usage_extra = usage_extra or {}
        self.requests: list[dict] = []
        self.answered = 0
        self.with_seed = with_seed
        self.in_flight = self.max_in_flight = 0
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path != "/v1/models":
                    self._send(404, {"error": {"message": "no such route"}})
                    return
                self._send(200, {"data": [{"id": double.model, "owned_by": double.owned_by}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with double._lock:
                    if double.failures:
                        status = double.failures.pop(0)
                        self._send(status, {"error": {"message": "busy"}}, {"Retry-After": "0"})
                        return
                    double.requests.append(body)
                if body.get("model") != double.model:
                    self._send(404, {"error": {"message": f"model {body.get('model')} not found"}})
                    return
                with double._lock:
                    double.in_flight += 1
                    double.max_in_flight = max(double.max_in_flight, double.in_flight)
                try:
                    args = (body["messages"], body["seed"]) if double.with_seed else (body["messages"],)
                    text = double.reply_fn(*args)
                finally:
                    with double._lock:
                        double.in_flight -= 1
                usage = {"prompt_tokens": 10, "completion_tokens": 3, **double.usage_extra}
                self._send(
                    200, {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": usage}
                )
                with double._lock:
                    double.answered += 1
                    if double.die_after is not None and double.answered >= double.die_after:
                        threading.Thread(target=double.stop, daemon=True).start()

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
