"""What every ``leafe`` verb module shares: the consoles, the common options, one-line failures.

Verb modules import from here (never from ``leafe_tui.cli``, which imports them) and expose a
``register(app)`` that ``leafe_tui.cli`` calls: registration happens one way, in one place.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from engine.errors import LeafeError
from engine.store import Store, StoreError
from leafe_tui import paths

console = Console()
err = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[
    Path | None, typer.Option("--db", help="SQLite database file [default: $LEAFE_DB or the user data dir]")
]
TasksFileOption = Annotated[
    Path | None, typer.Option("--tasks-file", help="JSONL file of your own code tasks (ids code/file/<id>)")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
SuiteOption = Annotated[
    str | None,
    typer.Option(
        "--suite",
        help="A built-in suite with a fixed split: humaneval, code-suite, sokoban or scienceworld, with "
        ":train or :held-out (e.g. humaneval:held-out; scienceworld also :dev, :test); its tasks are "
        "added to those given.",
    ),
]
BackendOption = Annotated[
    str,
    typer.Option(
        "--backend",
        help="Model backend by registry name: llama.cpp (in this process), openai (a server given by "
        "--base-url: llama-server, llama-cpp-python's server, vLLM, SGLang); scripted: a test double "
        "reading replies from the JSON list file given as --model.",
    ),
]
BaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--base-url",
        help="With --backend openai: the server's address, e.g. http://127.0.0.1:8000 (API key, if "
        "any, in $LEAFE_API_KEY); --model is then the name the server gives the model.",
    ),
]

WorkersOption = Annotated[
    int,
    typer.Option(
        "--workers",
        help="How many rollouts run at once: a server batches them; the in-process model opens the "
        "batched engine with that many slots (no faster on a 2-core machine, see the README).",
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print one line on stderr and return the Exit to raise."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def has_terminal() -> bool:
    """Whether stdin and stdout are a terminal, which the full-screen app needs."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def open_store(db: Path | None, *, create: bool = False) -> Store:
    try:
        return Store(db or paths.default_db(), create=create)
    except StoreError as exc:
        raise fail(str(exc)) from None


def fail_with(exc: BaseException, code: int = 2) -> typer.Exit:
    """``fail`` for a caught error: a LeafeError's sentence and hint, anything else as it prints."""
    return fail(exc.one_line() if isinstance(exc, LeafeError) else str(exc), code)


def config_default(cls: type, name: str) -> Any:
    """The default of a config dataclass field: CLI defaults are never written a second time."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def config_help(cls: type, name: str) -> str:
    """The help text a config dataclass gives its field (``metadata={"help": …}``)."""
    field = {f.name: f for f in dataclasses.fields(cls)}[name]
    return str(field.metadata.get("help", ""))


def explore_option(name: str, flag: str | None = None) -> Any:
    """An exploration option (``leafe explore``, ``leafe ablate explore``) whose help is the
    ExploreConfig field's own."""
    from engine.explorer import ExploreConfig

    return typer.Option(flag or "--" + name.replace("_", "-"), help=config_help(ExploreConfig, name))


def explore_default(name: str) -> Any:
    from engine.explorer import ExploreConfig

    return config_default(ExploreConfig, name)


class Verbs:
    """The top-level verbs (and groups) of one module: ``@verbs()`` marks a function, ``register(app)``
    adds them all to the ``leafe`` app, which ``leafe_tui.cli`` does once for each module."""

    def __init__(self, groups: dict[str, typer.Typer] | None = None) -> None:
        self._verbs: list[tuple[str | None, Callable[..., Any]]] = []
        self._groups = dict(groups or {})

    def __call__(self, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def mark(function: Callable[..., Any]) -> Callable[..., Any]:
            self._verbs.append((name, function))
            return function

        return mark

    def group(self, typer_app: typer.Typer, name: str) -> None:
        """A group of verbs (``leafe NAME …``) added with the others."""
        self._groups[name] = typer_app

    def register(self, app: typer.Typer) -> None:
        for name, function in self._verbs:
            app.command(name)(function)
        for name, group in self._groups.items():
            app.add_typer(group, name=name)
