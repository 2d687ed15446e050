"""``leafe env check NAME``: the conformance test on any installed environment, in plain words."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.errors import LeafeError
from leafe_tui.cli_common import JsonOption, Verbs, console, fail_with, print_json

verbs = Verbs()
register = verbs.register
env_app = typer.Typer(help="Environments: check that one behaves as leafe needs.", no_args_is_help=True)
verbs.group(env_app, "env")


@env_app.command("check")
def env_check(
    name: Annotated[str, typer.Argument(help="Environment name (`leafe tasks list` shows them).")],
    tasks: Annotated[int, typer.Option("--tasks", help="How many of its tasks to check.")] = 2,
    seed: Annotated[int, typer.Option(help="The reset seed used.")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Run the environment conformance test; exit 1 when a check fails.

    It checks deterministic reset and replay, invalid actions reported (never raised), episodes
    that end and unknown tasks refused.

    Example: leafe env check sokoban
    """
    from engine.env_check import check_environment
    from engine.envs import load_env

    try:
        load_env(name)  # an unknown name is one line, before any check
        checks = check_environment(lambda: load_env(name), tasks=max(1, tasks), seed=seed)
    except LeafeError as exc:
        raise fail_with(exc) from None
    failed = [c for c in checks if not c.passed]
    if as_json:
        print_json({"env": name, "passed": not failed, "checks": [c.__dict__ for c in checks]})
    else:
        for check in checks:
            mark = "[green]✓[/]" if check.passed else "[red]✗[/]"
            console.print(
                f"{mark} {check.name}" + (f": {check.detail}" if check.detail else ""), highlight=False
            )
        console.print(
            f"[bold green]{name} passes[/]"
            if not failed
            else f"[bold red]{name} fails {len(failed)} check(s)[/]"
        )
    if failed:
        raise typer.Exit(1)
