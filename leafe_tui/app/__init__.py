"""The leafe Textual app (``leafe tui``, ``leafe explore --tui``).

Widgets are grouped by feature: ``runs`` (the runs list), ``run_screen`` (one run: ``tree_view``,
``inspector``, ``review``), ``summary_editor``, ``compare``; ``worker`` runs the explorer in a
thread and turns its events into Messages; ``keys`` holds every binding (remappable by id);
``commands`` is the command palette provider; ``model`` is the in-memory index of a run.
"""

from __future__ import annotations

from leafe_tui.app.app import LeafeApp
from leafe_tui.app.worker import ExploreJob, default_backend_factory, default_env_factory

__all__ = ["ExploreJob", "LeafeApp", "default_env_factory", "default_backend_factory"]
