from __future__ import annotations

from pathlib import Path

import pytest

from engine.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    db = Store(tmp_path / "leafe.db")
    yield db
    db.close()


@pytest.fixture(autouse=True)
def _no_default_database(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """A verb run without --db uses $LEAFE_DB: point it at a scratch file, never the user's database."""
    monkeypatch.setenv("LEAFE_DB", str(tmp_path_factory.mktemp("default-db") / "leafe.db"))
