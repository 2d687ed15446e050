"""engine/ never imports Textual or torch (the headless core stays light and UI-free)."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import engine


def test_engine_imports_neither_textual_nor_torch() -> None:
    modules = [m.name for m in pkgutil.walk_packages(engine.__path__, "engine.")]
    assert "engine.explorer" in modules and "engine.backends.llama" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "import engine.backends.llama\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in {'textual', 'torch'})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
