"""Sharing this machine's cores among leafe's model processes.

llama.cpp's (and torch's) worker threads spin while they wait for a core, so two processes that
each take every core do not run at half speed but crawl: measured on a 2-core machine, two
llama.cpp processes with 2 threads each made 0.7 tok/s each, against 8.2 tok/s each with 1 thread
each (FACTS.md). So every leafe process that runs a model claims a share: it writes a small file
in a per-user folder while it lives, and before each model call asks how many threads its fair
share is now (the cores divided among the live claims, at least one). A claim whose process is
gone (killed, crashed) is ignored and removed: a pid is matched with its start time, so a reused
pid is not mistaken for it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

_COUNTER = itertools.count()
REFRESH_S = 1.0  # how stale a fair share may be


def cores_folder() -> Path:
    from engine.models import cache_root

    return Path(os.environ.get("LEAFE_CORES_DIR") or cache_root() / "cores")


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _started(pid: int) -> str | None:
    from engine.store import process_started

    return process_started(pid)


@dataclass(frozen=True)
class Claim:
    """One live model process (or one model in it) using the cores."""

    pid: int
    started: str | None
    kind: str  # llama.cpp, torch
    what: str  # for people: the model or job
    # Models of one process that never run at the same time (an actor and its reflection model)
    # name the same group and count as one claim.
    group: str | None = None

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's process with that pid: alive, but is it ours?
            pass
        return self.started is None or _started(self.pid) == self.started

    def describe(self) -> str:
        return f"pid {self.pid} ({self.kind}: {self.what})"


class CoreShare:
    """This process's claim on the cores, from creation until ``close``."""

    def __init__(
        self,
        kind: str,
        what: str,
        *,
        folder: Path | None = None,
        cores: int | None = None,
        refresh_s: float | None = None,
        group: str | None = None,
    ) -> None:
        self.refresh_s = REFRESH_S if refresh_s is None else refresh_s
        self.folder = folder or cores_folder()
        self.cores = cores or machine_cores()
        self.claim = Claim(os.getpid(), _started(os.getpid()), kind, what, group)
        self.path = self.folder / f"{self.claim.pid}-{next(_COUNTER)}.json"
        self._threads: int | None = None  # the last share read, and when
        self._read_at = 0.0
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.claim.__dict__))
        except OSError:  # a read-only cache: share nothing rather than fail to load a model
            self.path = None  # type: ignore[assignment]

    def _live(self) -> list[tuple[str, Claim]]:
        """(file name, claim) of every live claim on this machine; dead ones' files are removed."""
        live = []
        try:
            paths = sorted(self.folder.glob("*.json"))
        except OSError:
            paths = []
        for path in paths:
            try:
                claim = Claim(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # being written, or not ours
            if claim.alive():
                live.append((path.name, claim))
            else:
                with contextlib.suppress(OSError):
                    path.unlink()
        if self.path is None:  # no file of our own (a read-only cache): count ourselves anyway
            live.append(("", self.claim))
        return live

    def claims(self) -> list[Claim]:
        """Every live claim on this machine, this one included."""
        return [claim for _, claim in self._live()]

    def _users(self) -> int:
        """How many users of the cores there are: claims, a group of one process counted once."""
        return len({(c.pid, c.group) if c.group else name for name, c in self._live()})

    def others(self) -> list[Claim]:
        mine = self.path.name if self.path is not None else ""
        return [claim for name, claim in self._live() if name != mine]

    def threads(self) -> int:
        """This claim's fair share of the cores now (at least one thread). Asked before every model
        call, so the folder is read at most once per ``refresh_s`` seconds."""
        now = time.monotonic()
        if self._threads is None or now - self._read_at >= self.refresh_s:
            self._threads = max(1, self.cores // max(1, self._users()))
            self._read_at = now
        return self._threads

    def sharing_note(self) -> str | None:
        """A sentence for people when other leafe model processes share the cores, else None."""
        count = self._users()
        if count <= 1:
            return None
        if count > self.cores:
            return (
                f"{count} leafe model processes share {self.cores} cores: each runs on one thread and "
                "all of them run slowly; wait for the others or stop them"
            )
        threads = self.threads()
        return f"{count} leafe model processes share {self.cores} cores: this one uses {threads} thread(s)"

    def close(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None  # type: ignore[assignment]

    def __del__(self) -> None:  # a backend that is never closed still gives its cores back
        with contextlib.suppress(Exception):
            self.close()
