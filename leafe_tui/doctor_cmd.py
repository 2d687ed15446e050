"""``leafe doctor``: whether this machine can run leafe, in a few lines, with the fix for what cannot."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.doctor import FAIL, OK, Finding, Report, diagnose, setup_check
from leafe_tui import paths
from leafe_tui.cli_common import DbOption, JsonOption, Verbs, console, err, fail, print_json

_MARK = {OK: "[green]✓[/]", "warn": "[yellow]![/]", FAIL: "[bold red]✗[/]"}


verbs = Verbs()
register = verbs.register


def _model_path(model: str | None) -> Path | None:
    if not model:
        return None
    from engine.models import ModelError, resolve_model

    try:
        return resolve_model(model, pull_missing=False)
    except ModelError as exc:
        raise fail(str(exc)) from None


def _print(report: Report) -> None:
    width = max(len(f.name) for f in report.findings)
    for finding in report.findings:
        console.print(
            f"{_MARK.get(finding.status, '?')} {finding.name:<{width}}  {finding.detail}",
            highlight=False,
            soft_wrap=True,
        )
        if finding.fix and finding.status != OK:
            console.print(f"  {'':<{width}}  [dim]fix:[/] {finding.fix}", highlight=False, soft_wrap=True)
    if report.ok:
        console.print("leafe can run here.")
    else:
        console.print("[bold red]leafe cannot run here until the lines marked ✗ are fixed.[/]")


def _first_failure(report: Report) -> Finding:
    return next(f for f in report.findings if f.status == FAIL)


@verbs()
def doctor(
    db: DbOption = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model for the decode check [default: the smallest cached one]."),
    ] = None,
    setup: Annotated[
        bool,
        typer.Option(
            "--setup",
            help="Only the llama.cpp build and a real decode, once per installed build (what `make` runs).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Say whether this machine can run leafe, and what to fix when it cannot.

    Checks the llama.cpp build against the CPU, a real decode in a child process, the sandbox, the
    cached models, torch/CUDA and the database. Exit 0 when all is well, 1 when not.

    Example: leafe doctor
    """
    path = _model_path(model)
    if setup:
        if path is None:
            raise fail("--setup needs --model (the model the set-up just pulled)")
        report = setup_check(path)
        if report is None or report.ok:
            return
        bad = _first_failure(report)
        err.print(f"[bold red]leafe:[/] {bad.detail}; fix: {bad.fix}", highlight=False)
        raise typer.Exit(1)
    report = diagnose(db or paths.default_db(), path)
    if as_json:
        print_json(report.as_dict())
    else:
        _print(report)
    if not report.ok:
        raise typer.Exit(1)
