"""One real exploration per environment with the default model, and its tree as a TUI screenshot.

Explores each task (resumable: a task that already has a finished run in the database is not
explored again) with ``leafe explore``'s defaults and ``--budget``, then opens each run in the
terminal app and saves the tree screen as ``docs/screens/tree-ENV.svg``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from engine.store import Store

TASKS = ["textworld-express/twc/0", "scienceworld/find-animal/0", "miniwob/enter-text/0", "guess/0"]


async def screenshot(db: Path, run_id: int, out: Path) -> None:
    from leafe_tui.app.app import LeafeApp

    app = LeafeApp(db, run_id=run_id)
    async with app.run_test(size=(120, 42)) as pilot:
        await pilot.pause()
        await pilot.pause(0.5)
        app.save_screenshot(filename=out.name, path=str(out.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("bench/work/worlds.db"))
    parser.add_argument("--budget", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("docs/screens"))
    parser.add_argument("tasks", nargs="*", default=TASKS)
    args = parser.parse_args()
    for task in args.tasks:
        done = args.db.exists() and any(
            r["task_id"] == task and r["status"] == "finished" for r in Store(args.db).list_runs()
        )
        if not done:
            command = [sys.executable, "-m", "leafe_tui", "explore", task, "--db", str(args.db)]
            command += ["--budget", str(args.budget), "--reflect-every", "5", "--max-tokens", "160"]
            subprocess.run(command, check=True)
        store = Store(args.db)
        run = [r for r in store.list_runs() if r["task_id"] == task and r["status"] == "finished"][-1]
        totals = store.tree(run["id"])["totals"]
        env = task.split("/")[0]
        asyncio.run(screenshot(args.db, run["id"], args.out / f"tree-{env}.svg"))
        print(f"{task}: run {run['id']}, {totals['episodes']} episodes, {totals['successes']} successes")


if __name__ == "__main__":
    main()
