"""The leafe Textual app: runs list, run tree + inspector, summary editor, compare; explorer work
in a thread worker whose events arrive as Messages and grow the tree in place."""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

from textual.app import App
from textual.reactive import reactive
from textual.widgets import HelpPanel
from textual.worker import Worker as TextualWorker
from textual.worker import WorkerState

from engine.backends.base import ModelBackend
from engine.events import RunChanged
from engine.store import Store, StoreError
from leafe_tui.app import keys
from leafe_tui.app.commands import LeafeCommands
from leafe_tui.app.run_screen import RunScreen
from leafe_tui.app.runs import RunsScreen
from leafe_tui.app.work_bar import WorkState
from leafe_tui.app.worker import (
    BackendFactory,
    EnvFactory,
    ExploreJob,
    ExplorerUpdate,
    JobRunner,
    WorkFailed,
    WorkFinished,
    WorkProgress,
    default_backend_factory,
    default_env_factory,
)


class LeafeApp(App[None]):
    """Browse, review and grow the rollback trees in one leafe database.

    ``backend_factory`` opens a ModelSpec (through the registry by default; tests pass the scripted
    backend); ``env_factory`` opens an EnvSpec. ``job`` starts explorer work as soon as the app is
    up; ``run_id`` opens that run's tree first. ``keymap`` maps binding ids to keys (``[tui.keys]``
    of the config).
    """

    TITLE = "leafe"
    CSS_PATH = "app.tcss"
    BINDINGS = keys.bindings(keys.APP)
    COMMANDS = App.COMMANDS | {LeafeCommands}
    ENABLE_COMMAND_PALETTE = True

    work: reactive[WorkState | None] = reactive(None)

    def __init__(
        self,
        db_path: str | Path,
        *,
        backend_factory: BackendFactory | None = None,
        env_factory: EnvFactory | None = None,
        job: ExploreJob | None = None,
        run_id: int | None = None,
        keymap: dict[str, str] | None = None,
        eager_limit: int | None = None,
        n_ctx: int = 8192,
        cache: bool = True,
    ) -> None:
        super().__init__()
        self.n_ctx, self.cache = n_ctx, cache  # for runs started in the app (recorded runs keep theirs)
        self.db_path = Path(db_path).expanduser()
        self.store = Store(self.db_path)
        self.backend_factory = backend_factory or default_backend_factory()
        self.env_factory = env_factory or default_env_factory()
        self.keymap = dict(keymap or {})
        self._initial_job = job
        self._initial_run = run_id
        self._eager_limit = eager_limit
        self._stop = threading.Event()
        self._worker: TextualWorker[None] | None = None
        self._job_active = False
        self._backends: dict[str, ModelBackend] = {}  # models loaded by workers, reused by later jobs
        self._follow_new_run = job is not None and job.kind == "start"

    # --- screens ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        if self.keymap:
            self.set_keymap(self.keymap)
        self.push_screen(RunsScreen())
        if self._initial_run is not None:
            self.open_run(self._initial_run)
        if self._initial_job is not None:
            self.start_job(self._initial_job)

    def open_run(self, run_id: int) -> RunScreen | None:
        try:
            screen = RunScreen(self.store, run_id, eager_limit=self._eager_limit)
        except StoreError as exc:
            self.notify(str(exc), severity="error")
            return None
        self.push_screen(screen)
        return screen

    def action_open_training(self) -> None:
        """The training screen (jobs, loss curves, adapters): `t` on the runs list, or the palette
        anywhere; never twice in the stack. Imported here: only this screen reads Stage 2."""
        from leafe_tui.app.training import TrainingScreen

        if not any(isinstance(screen, TrainingScreen) for screen in self.screen_stack):
            self.push_screen(TrainingScreen())

    def action_open_evaluations(self) -> None:
        """The stored evaluations (`v` on the runs list, or the palette); never twice in the stack."""
        from leafe_tui.app.evaluations import EvaluationsScreen

        if not any(isinstance(screen, EvaluationsScreen) for screen in self.screen_stack):
            self.push_screen(EvaluationsScreen())

    def run_screens(self, run_id: int | None = None) -> list[RunScreen]:
        return [s for s in self.screen_stack if isinstance(s, RunScreen) and run_id in (None, s.run_id)]

    def keymap_keys(self, binding_id: str) -> str:
        return keys.key_for(binding_id, self.keymap)

    # --- help ---------------------------------------------------------------------------------
    def action_toggle_help(self) -> None:
        if self.screen.query(HelpPanel):
            self.action_hide_help_panel()
        else:
            self.action_show_help_panel()

    # --- background work ----------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A job runs: from start_job until its thread posts how it ended."""
        return self._job_active

    def start_job(self, job: ExploreJob, *, follow: bool = False) -> bool:
        """Start explorer work in a thread; one job at a time. ``follow``: open the run it starts
        as soon as it exists (when the runs list is in front)."""
        if self.busy:
            doing = self.work.text if self.work else "working"
            self.notify(
                f"still {doing}; stop it ({self.keymap_keys('app.stop')}) or wait for it to end",
                severity="warning",
            )
            return False
        self._stop = threading.Event()
        runner = JobRunner(
            self.db_path,
            self.backend_factory,
            self.env_factory,
            self.post_message,
            self._stop,
            self._backends,
        )
        self.work = WorkState(job.describe() + "…")
        self._job_active = True
        if follow and job.kind == "start":
            self._follow_new_run = True
        self._worker = self.run_worker(
            lambda: runner.run(job), thread=True, group="explore", name=job.describe(), exit_on_error=False
        )
        self.refresh_bindings()
        return True

    def action_stop_work(self) -> None:
        if not self.busy:
            self.notify("nothing is running", timeout=2)
            return
        self._stop.set()
        if self.work is not None:
            self.work = WorkState(self.work.text, self.work.done, self.work.total, stopping=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "stop_work":
            return self.busy
        return True

    def on_explorer_update(self, message: ExplorerUpdate) -> None:
        event = message.event
        screens = self.run_screens(event.run_id)
        for screen in screens:
            screen.apply_event(event)
        if isinstance(event, RunChanged):
            if not screens and self._follow_new_run and event.status == "running":
                self._follow_new_run = False
                if isinstance(self.screen, RunsScreen):
                    self.open_run(event.run_id)
            self._refresh_runs_list()

    def on_work_progress(self, message: WorkProgress) -> None:
        stopping = self.work.stopping if self.work else False
        self.work = WorkState(message.text, message.done, message.total, stopping)

    def on_work_finished(self, message: WorkFinished) -> None:
        self.work = None
        self._job_active = False
        what = message.job.describe()
        if message.stopped:
            self.notify(
                f"stopped {what}; the run can be resumed ({self.keymap_keys('run.resume')})", timeout=4
            )
        else:
            self.notify(f"done {what}", timeout=3)
        self._refresh_runs_list()
        self.refresh_bindings()

    def on_work_failed(self, message: WorkFailed) -> None:
        self.work = None
        self._job_active = False
        self.notify(message.error, title=f"{message.job.describe()} failed", severity="error", timeout=8)
        self._refresh_runs_list()
        self.refresh_bindings()

    def on_worker_state_changed(self, event: TextualWorker.StateChanged) -> None:
        # the thread function posts its own end message; this catches a worker that died anyway
        if event.worker is self._worker and event.state == WorkerState.ERROR and self._job_active:
            self.work = None
            self._job_active = False
            self.notify(f"background work failed: {event.worker.error}", severity="error")

    def _refresh_runs_list(self) -> None:
        for screen in self.screen_stack:
            if isinstance(screen, RunsScreen) and screen.is_mounted:
                screen.refresh_runs()

    async def wait_for_work(self) -> None:
        """Wait until the explorer thread has ended (tests); its last message may still be queued."""
        if self._worker is not None:
            await self._worker.wait()

    def on_unmount(self) -> None:
        self._stop.set()
        if self.busy:
            return  # the thread still uses its model and store; the process ends anyway
        for backend in self._backends.values():
            with contextlib.suppress(Exception):  # closing a model must not turn quitting into a traceback
                backend.close()
        self.store.close()
