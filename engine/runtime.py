"""The runtime layer under the CLI and the TUI: specs from what a person asked for or from a run's record.

``model_spec_for`` turns the words of a request (a model name or path, an adapter id or file, the
context length) into a checked ``ModelSpec`` without loading anything, so every mistake is found
before the model loads. ``run_model_spec`` / ``run_env_spec`` read them back from a run, so resuming,
re-branching, building a dataset or evaluating needs no flag repeated. ``engine.registry`` opens them.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from pathlib import Path
from typing import Any

from engine.backends.llama import MIN_N_CTX
from engine.errors import SettingError
from engine.specs import EnvSpec, ModelSpec


def check_n_ctx(n_ctx: int) -> None:
    if n_ctx < MIN_N_CTX:
        raise SettingError(f"the context length must be at least {MIN_N_CTX} tokens, not {n_ctx}")


def model_spec_for(
    model: str = "",
    *,
    adapter: str | None = None,
    db: Path | None = None,
    n_ctx: int = 8192,
    cache: bool = True,
    backend: str = "llama.cpp",
    base_url: str | None = None,
) -> ModelSpec:
    """A checked spec for a model (name or GGUF path) and an adapter (id in ``db`` or GGUF file).

    With an adapter and no model, the model is the adapter's base. A served model (``base_url``)
    is named as its server names it; its adapter, if any, is the server's to load.
    """
    check_n_ctx(n_ctx)
    if base_url or backend == SERVED_BACKEND:
        return _served_spec(model, adapter=adapter, backend=backend, base_url=base_url, n_ctx=n_ctx)
    adapter_path: Path | None = None
    adapter_id: int | None = None
    if adapter:
        model, adapter_path, adapter_id = resolve_adapter(adapter, db, model)
        check_adapter_file(adapter_path)
    if not model and backend == "llama.cpp":
        from engine.models import DEFAULT_MODEL

        model = DEFAULT_MODEL
    elif model and Path(model).expanduser().is_file():  # a file: recorded so any folder can reopen it
        model = str(Path(model).expanduser().resolve())
    return ModelSpec(
        backend=backend,
        model=model,
        adapter=str(adapter_path) if adapter_path else None,
        adapter_id=adapter_id,
        n_ctx=n_ctx,
        cache=cache,
    )


SERVED_BACKEND = "openai"


def _served_spec(
    model: str, *, adapter: str | None, backend: str, base_url: str | None, n_ctx: int
) -> ModelSpec:
    if backend != SERVED_BACKEND:
        raise SettingError(
            f"--base-url names a model server, which the {backend} backend does not use",
            hint=f"add --backend {SERVED_BACKEND}",
        )
    if not base_url:
        raise SettingError(f"the {backend} backend needs the server's address: give --base-url URL")
    if not model:
        raise SettingError("a served model needs the name its server gives it: give --model NAME")
    if adapter:
        raise SettingError(
            "a served model's adapter is loaded by its server (llama-server --lora, vLLM --lora-modules)",
            hint="serve the adapter and give its name with --model",
        )
    from engine.backends.base import BackendError
    from engine.backends.served import api_url

    try:
        api_url(base_url)
    except BackendError as exc:
        raise SettingError(str(exc)) from None
    return ModelSpec(backend=backend, model=model, n_ctx=n_ctx, base_url=base_url)


def with_workers(spec: ModelSpec, workers: int) -> ModelSpec:
    """The spec to open for ``workers`` calls at once: the in-process model as the batched engine with
    that many slots (not recorded: a resume chooses its own number of workers)."""
    if workers > 1 and spec.backend == "llama.cpp":
        return dataclasses.replace(spec, options={**spec.options, "slots": workers})
    return spec


def check_workers(spec: ModelSpec, workers: int) -> None:
    """SettingError unless the model ``spec`` opens (with ``with_workers``) can serve ``workers`` at once."""
    from engine.registry import backend_class

    if workers < 1:
        raise SettingError(f"--workers must be at least 1, not {workers}")
    if workers > 1 and not backend_class(spec.backend).takes_concurrent_calls(with_workers(spec, workers)):
        raise SettingError(
            f"the {spec.backend} backend answers one call at a time, so --workers {workers} "
            "would not be faster",
            hint="use the in-process llama.cpp model or a server (--backend openai --base-url URL)",
        )


def run_model_spec(run: dict[str, Any]) -> ModelSpec:
    """How a run's model is reopened: its recorded spec (runs of older leafe: their model and adapter)."""
    spec = ModelSpec.from_json(run.get("model_spec"))
    if spec is not None:
        return spec
    adapter = run["config"].get("adapter")
    backend = "llama.cpp" if str(run.get("backend", "")).startswith("llama.cpp") else str(run.get("backend"))
    return ModelSpec(backend=backend, model=run["model"], adapter=adapter)


def run_env_spec(run: dict[str, Any], tasks_file: Path | None = None) -> EnvSpec:
    """How a run's environment is reopened; ``tasks_file`` fills in what runs of older leafe lack."""
    spec = EnvSpec.from_json(run.get("env_spec"))
    if spec is None:
        spec = EnvSpec(run["env"])
    if spec.tasks_file is None and tasks_file is not None:
        spec = EnvSpec(spec.name, str(tasks_file), spec.options)
    return spec


def env_spec_for(task_id: str, tasks_file: Path | None = None, *, check_task: bool = True) -> EnvSpec:
    """The spec of the environment a task belongs to; the tasks file goes only to an environment that
    takes one. ``check_task``: the task must exist (off where it was checked before)."""
    from engine.envs import env_for_task, load_env

    name = task_id.partition("/")[0]
    env = env_for_task(task_id, tasks_file=tasks_file) if check_task else load_env(name)
    takes_file = tasks_file is not None and "tasks_file" in inspect.signature(type(env)).parameters
    return EnvSpec(
        env.name, str(Path(tasks_file).expanduser().resolve()) if takes_file and tasks_file else None
    )


# --- adapters -------------------------------------------------------------------------------------


def same_model(a: str, b: str) -> bool:
    """Whether two model names or paths name the same GGUF file (without downloading anything)."""
    from engine.models import ModelError, resolve_model

    if a == b:
        return True
    try:
        return resolve_model(a, pull_missing=False) == resolve_model(b, pull_missing=False)
    except ModelError:
        return False


def resolve_adapter(ref: str, db: Path | None, model: str) -> tuple[str, Path, int | None]:
    """An adapter id (from the store at ``db``) or a GGUF LoRA path, checked against ``model``.

    Returns the model to use (the adapter's base when ``model`` is empty), the GGUF LoRA path and
    the adapter's id (None for a bare file).
    """
    if not ref.isdigit():
        path = Path(ref).expanduser()
        if not path.is_file():
            raise SettingError(
                f"no adapter file {path}: give an adapter id (`leafe adapters`) or a .gguf file"
            )
        return model, path.resolve(), None
    from engine.store import Store, StoreError

    if db is None:
        raise SettingError(f"adapter {ref} is an id, but no database was given to look it up in")
    try:
        store = Store(db, create=False)
        try:
            row = store.adapter(int(ref))
        finally:
            store.close()
    except StoreError as exc:
        raise SettingError(str(exc)) from None
    path = Path(row["gguf_path"] or "")
    if not path.is_file():
        raise SettingError(f"adapter {ref}: its GGUF file {path} is missing (was the job folder deleted?)")
    if model and row["base_gguf"] and not _same_base(model, row["base"], Path(row["base_gguf"])):
        raise SettingError(
            f"adapter {ref} was trained on {row['base']}, not {model}", hint=f"use the model {row['base']}"
        )
    return model or row["base"], path.resolve(), int(ref)


def check_adapter_file(path: Path) -> None:
    """SettingError unless ``path`` is a whole GGUF LoRA adapter: llama.cpp crashes on anything else."""
    from engine.backends.base import BackendError
    from engine.backends.llama import check_lora_adapter

    try:
        check_lora_adapter(path)
    except BackendError as exc:
        raise SettingError(str(exc)) from None


def _same_base(model: str, base: str, base_gguf: Path) -> bool:
    """Whether ``model`` (a name or a GGUF path) is the model an adapter was trained on."""
    from engine.models import MODELS

    if model == base:
        return True
    if model in MODELS:
        return MODELS[model].filename == base_gguf.name
    return Path(model).expanduser().resolve() == base_gguf.resolve()


# --- the setting an adapter was trained for ---------------------------------------------------------

# The explore settings that shape what a policy sees and may answer; an evaluation keeps them.
TRAINED_SETTINGS = ("grammar", "max_tokens", "max_thought_chars")


def trained_setting(db: Path, adapter_id: int) -> dict[str, Any]:
    """The settings of the runs an adapter's data came from (the most common value of each).

    Empty when the lineage is broken (a job trained from a bare JSONL file, a deleted dataset).
    """
    from collections import Counter

    from engine.store import Store, StoreError

    try:
        store = Store(db, create=False)
    except StoreError:
        return {}
    try:
        adapter = store.adapter(adapter_id)
        dataset_id = adapter.get("dataset_id")
        if dataset_id is None:
            return {}
        run_ids = {row["run_id"] for row in store.dataset_examples(int(dataset_id))}
        configs = [store.get_run(run_id)["config"] for run_id in sorted(run_ids)]
    except StoreError:
        return {}
    finally:
        store.close()
    setting = {}
    for name in TRAINED_SETTINGS:
        values = Counter(_json_key(c[name]) for c in configs if name in c)
        if values:
            setting[name] = json.loads(values.most_common(1)[0][0])
    return setting


def _json_key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
