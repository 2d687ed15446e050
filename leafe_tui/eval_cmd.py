"""``leafe eval``: Pass@k of the model (optionally with an adapter) from plain rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.backends.base import BackendError
from engine.errors import LeafeError, SettingError
from leafe_tui import paths
from leafe_tui.cli_common import (
    BackendOption,
    DbOption,
    JsonOption,
    TasksFileOption,
    Verbs,
    console,
    err,
    fail,
    print_json,
)

verbs = Verbs()
register = verbs.register


def parse_ks(text: str, samples: int | None = None) -> list[int]:
    """The k of pass@k; each must be at most the number of samples (pass@k needs k ≤ n)."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise SettingError(f"--k takes comma-separated whole numbers like 1,4, not {text!r}") from None
    if not ks or ks[0] < 1:
        raise SettingError("--k values must be 1 or more")
    if samples is not None and ks[-1] > samples:
        raise SettingError(f"--k {ks[-1]} is more than -n {samples} rollouts: pass@k needs k ≤ n")
    return ks


def check_settings(samples: int, temperature: float, max_tokens: int, max_steps: int | None) -> None:
    """The flag values that would make a rollout meaningless, refused before the model loads."""
    if samples < 1:
        raise SettingError("-n must be at least 1")
    if temperature < 0:
        raise SettingError(f"--temperature must be 0 or more, not {temperature}")
    if max_tokens < 1:
        raise SettingError(f"--max-tokens must be at least 1, not {max_tokens}")
    if max_steps is not None and max_steps < 1:
        raise SettingError(f"--max-steps must be at least 1, not {max_steps}")


@verbs("eval")
def evaluate(
    tasks: Annotated[list[str], typer.Argument(help="Task ids to evaluate.")],
    model: Annotated[str, typer.Option("--model", help="Known model name or path to a .gguf file.")] = "",
    backend: BackendOption = "llama.cpp",
    adapter: Annotated[
        str | None, typer.Option("--adapter", help="A trained adapter: id (`leafe adapters`) or .gguf.")
    ] = None,
    samples: Annotated[int, typer.Option("-n", "--samples", help="Rollouts per task.")] = 4,
    k: Annotated[
        str | None,
        typer.Option("--k", help="Comma-separated k of pass@k, each at most -n [default: 1,4 up to -n]."),
    ] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature.")] = 0.7,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            help="Reply length limit per step [default: as the adapter was trained, else 512].",
        ),
    ] = None,
    grammar: Annotated[
        bool | None,
        typer.Option(
            "--grammar/--no-grammar",
            help="Constrain replies with the action grammar [default: as the adapter was trained, else on].",
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Steps per episode [default: the environment's limit].")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="llama.cpp context length.")] = 8192,
    tasks_file: TasksFileOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Pass@k from plain rollouts (no reflection, no rollback), as the paper measures a policy.

    Run it with and without --adapter to see what training changed. Example:
    leafe eval code/suite/digit-collapse -n 8 --k 1,4,8 --adapter 1
    """
    from engine.registry import open_backend, open_env
    from engine.rollout import RolloutConfig, evaluate_task
    from engine.runtime import env_spec_for, model_spec_for, trained_setting

    database = db or paths.default_db()
    try:
        spec = model_spec_for(model, adapter=adapter, db=database, n_ctx=n_ctx, backend=backend)
        # an adapter is evaluated in the setting it was trained for, unless a flag says otherwise
        trained = trained_setting(database, spec.adapter_id) if spec.adapter_id is not None else {}
        defaults = RolloutConfig()
        config = RolloutConfig(
            temperature=temperature,
            max_tokens=max_tokens
            if max_tokens is not None
            else trained.get("max_tokens", defaults.max_tokens),
            grammar=grammar if grammar is not None else trained.get("grammar", defaults.grammar),
            max_thought_chars=trained.get("max_thought_chars", defaults.max_thought_chars),
            seed=seed,
            max_steps=max_steps,
        )
        check_settings(samples, temperature, config.max_tokens, max_steps)
        ks = parse_ks(k, samples) if k is not None else sorted({1, min(4, samples)})
        envs = {task: open_env(env_spec_for(task, tasks_file)) for task in tasks}
        with err.status(f"loading {spec.model}{' with its adapter' if spec.adapter else ''}…"):
            backend = open_backend(spec)
    except (LeafeError, OSError) as exc:
        raise fail(exc.one_line() if isinstance(exc, LeafeError) else str(exc)) from None
    model_name = spec.model
    rows = []
    try:
        for task in tasks:
            with err.status(f"{task}: rollout 1/{samples}") as status:

                def progress(sample: int, result, task: str = task, status=status) -> None:
                    mark = "✓" if result.success else "✗"
                    status.update(f"{task}: rollout {sample + 2}/{samples} (last {mark})")

                rows.append(evaluate_task(backend, envs[task], task, samples, ks, config, progress))
    except KeyboardInterrupt:
        raise fail("interrupted", 130) from None
    except BackendError as exc:
        raise fail(str(exc), 1) from None
    finally:
        backend.close()
    adapter_label = spec.adapter
    if as_json:
        print_json({"model": model_name, "adapter": adapter_label, "tasks": rows})
        return
    console.print(_table(rows, ks, model_name, adapter_label))


def _table(rows: list[dict], ks: list[int], model: str, adapter: str | None):
    from rich.table import Table

    title = f"pass@k of {model}" + (f" + adapter {Path(adapter).parent.name}" if adapter else "")
    table = Table(title=title, title_justify="left")
    for column in ("task", "n", "solved", *[f"pass@{k}" for k in ks], "tok/s"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for row in rows:
        speed = row["generated_tokens"] / row["seconds"] if row["seconds"] else 0.0
        cells = [f"{100 * row['pass_at'][k]:.1f}%" if k in row["pass_at"] else "" for k in ks]
        table.add_row(row["task_id"], str(row["n"]), str(row["successes"]), *cells, f"{speed:.0f}")
    if len(rows) > 1:
        means = []
        for k in ks:
            values = [r["pass_at"][k] for r in rows if k in r["pass_at"]]
            means.append(f"{100 * sum(values) / len(values):.1f}%" if values else "")
        table.add_row("mean", "", str(sum(r["successes"] for r in rows)), *means, "", style="bold")
    return table
