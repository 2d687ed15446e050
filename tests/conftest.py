from __future__ import annotations

from pathlib import Path

import pytest

from engine.store import Store


@pytest.fixture
def store(tmp_path: Path) -> Store:
    db = Store(tmp_path / "leafe.db")
    yield db
    db.close()
