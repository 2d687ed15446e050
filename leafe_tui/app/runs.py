"""The runs of the database, one row each; enter opens a run's tree."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from leafe_tui.app import keys
from leafe_tui.app.work_bar import WorkBar
from leafe_tui.styles import status_style

if TYPE_CHECKING:
    from leafe_tui.app.app import LeafeApp

COLUMNS = ("run", "task", "model", "status", "episodes", "steps", "branches", "successful", "created")


class RunsTable(DataTable):
    HELP = """
## Runs
Every exploration run in the database. `enter` (or a click) opens its rollback tree; `r` reloads
the list. Runs marked *interrupted* or *stopped* can be resumed from their tree (`ctrl+r`).
"""


class RunsScreen(Screen[None]):
    """The runs list (the app's first screen)."""

    BINDINGS = keys.bindings(keys.RUNS)

    @property
    def leafe(self) -> LeafeApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(id="runs-title")
        yield WorkBar()
        yield RunsTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        table = self.query_one(RunsTable)
        for column in COLUMNS:
            table.add_column(column, key=column)
        self.refresh_runs()
        table.focus()

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    def refresh_runs(self) -> None:
        table = self.query_one(RunsTable)
        runs = self.leafe.store.list_runs()
        selected = self.selected_run()
        table.clear()
        for run in runs:
            table.add_row(*self._cells(run), key=str(run["id"]))
        title = Text.assemble(
            ("leafe ", "bold green"), (f"{len(runs)} runs in ", "dim"), str(self.leafe.store.path)
        )
        if not runs:
            title.append("   no runs yet: `leafe explore TASK --tui` starts one", style="yellow")
        self.query_one("#runs-title", Static).update(title)
        if selected is not None and str(selected) in {str(r["id"]) for r in runs}:
            table.move_cursor(row=table.get_row_index(str(selected)), animate=False)

    @staticmethod
    def _cells(run: dict[str, Any]) -> list[Text | str]:
        status = Text(run["status"], style=status_style(run["status"]))
        successes = Text(str(run["successes"]), style="bold green" if run["successes"] else "dim")
        return [
            Text(str(run["id"]), justify="right"),
            run["task_id"],
            run["model"],
            status,
            Text(f"{run['episodes']}/{run['config'].get('budget', '?')}", justify="right"),
            Text(str(run["steps"]), justify="right"),
            Text(str(run["rollbacks"]), justify="right"),
            successes,
            run["created_at"][:16].replace("T", " "),
        ]

    def selected_run(self) -> int | None:
        table = self.query_one(RunsTable)
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return int(key) if key is not None else None

    def action_open_run(self) -> None:
        run_id = self.selected_run()
        if run_id is not None:
            self.leafe.open_run(run_id)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.leafe.open_run(int(event.row_key.value))

    def action_refresh(self) -> None:
        self.refresh_runs()
