"""The command palette: every bound action of the screen in front, plus the tree filters; the app's
own commands (help, stop) and the training screen everywhere."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from leafe_tui.app import keys
from leafe_tui.app.model import FILTERS


class LeafeCommands(Provider):
    """Commands that apply where the palette was opened, with the key that does the same."""

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        from leafe_tui.app.run_screen import RunScreen
        from leafe_tui.app.runs import RunsScreen
        from leafe_tui.app.training import TrainingScreen

        screen = self.screen
        keymap = getattr(self.app, "keymap", {})
        commands: list[tuple[str, Callable[[], object], str]] = []

        def add(group: list[keys.Key], target: object) -> None:
            for key in group:
                if key.action in {"command_palette", "toggle_help"}:
                    continue
                run = partial(target.run_action, key.action)  # type: ignore[attr-defined]
                commands.append((key.title, run, f"{keys.key_for(key.id, keymap)}  ({key.id})"))

        if isinstance(screen, RunScreen):
            add(keys.RUN, screen)
            add(keys.TREE, screen.run_tree)
            for name in FILTERS:
                commands.append(
                    (f"Filter: {name}", partial(screen.set_filter, name), "show only these branches")
                )
        elif isinstance(screen, RunsScreen):
            add(keys.RUNS, screen)
        elif isinstance(screen, TrainingScreen):
            add(keys.TRAINING, screen)
        if not isinstance(screen, RunsScreen | TrainingScreen):  # the runs list has it on a key
            training = keys.ALL["runs.training"]
            run = getattr(self.app, "action_open_training", None)
            if run is not None:
                commands.append(
                    (training.title, run, f"{keys.key_for(training.id, keymap)} on the runs list")
                )
        if not isinstance(screen, RunsScreen):
            evaluations = keys.ALL["runs.evaluations"]
            commands.append(
                (evaluations.title, self.app.action_open_evaluations,  # type: ignore[attr-defined]
                 f"{keys.key_for(evaluations.id, keymap)} on the runs list")
            )  # fmt: skip
        add(keys.APP, self.app)
        return commands

    async def discover(self) -> Hits:
        for name, run, help_text in self._commands():
            yield DiscoveryHit(name, run, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, run, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), run, help=help_text)
