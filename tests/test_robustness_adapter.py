"""``--adapter`` files that are not a whole GGUF LoRA adapter: llama.cpp crashes on them (SIGSEGV), so
leafe reads the GGUF header itself and refuses them before llama.cpp sees them."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from engine.backends import llama
from engine.backends.base import BackendError
from engine.models import TEST_MODEL, cached_path
from tests.doubles import write_adapter

gguf = pytest.importorskip("gguf")  # writes the valid adapters the checks are measured against


def bad_adapters(folder: Path) -> dict[str, Path]:
    """Files people pass to --adapter by mistake, by what is wrong with them."""
    whole = write_adapter(folder / "whole.gguf").read_bytes()
    files = {
        "text": b"this is a README, not an adapter\n",
        "empty": b"",
        "cut in its header": whole[:60],
        "cut in its tensors": whole[:-100],
    }
    for name, data in files.items():
        (folder / f"{name.replace(' ', '-')}.gguf").write_bytes(data)
    return {name: folder / f"{name.replace(' ', '-')}.gguf" for name in files}


def test_a_whole_lora_adapter_passes(tmp_path: Path) -> None:
    path = write_adapter(tmp_path / "lora.gguf")
    llama.check_lora_adapter(path)
    header = llama.read_gguf_header(path)
    assert header.metadata["general.type"] == "adapter" and header.tensor_count == 2
    assert header.needed_bytes == path.stat().st_size


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("text", "not a GGUF file"),
        ("empty", "is empty"),
        ("cut in its header", "truncated"),
        ("cut in its tensors", "truncated"),
    ],
)
def test_files_that_are_not_a_whole_adapter_are_refused(tmp_path: Path, name: str, words: str) -> None:
    path = bad_adapters(tmp_path)[name]
    with pytest.raises(BackendError, match=words):
        llama.check_lora_adapter(path)


def test_a_gguf_that_is_not_a_lora_adapter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="GGUF model, not a LoRA adapter"):
        llama.check_lora_adapter(write_adapter(tmp_path / "model.gguf", kind="model", adapter_type=None))
    with pytest.raises(BackendError, match="not a LoRA"):
        llama.check_lora_adapter(write_adapter(tmp_path / "cv.gguf", adapter_type="control_vector"))


def _model() -> Path:
    pytest.importorskip("llama_cpp")
    path = cached_path(TEST_MODEL)
    if path is None:
        pytest.skip(f"{TEST_MODEL} is not downloaded")
    return path


@pytest.mark.real_model
def test_a_base_model_is_not_an_adapter() -> None:
    with pytest.raises(BackendError, match="GGUF model, not a LoRA adapter"):
        llama.check_lora_adapter(_model())


@pytest.mark.real_model
@pytest.mark.parametrize("name", ["text", "empty", "cut in its header", "cut in its tensors", "base model"])
def test_explore_with_a_bad_adapter_is_a_one_line_error_not_a_crash(tmp_path: Path, name: str) -> None:
    model = _model()
    adapter = model if name == "base model" else bad_adapters(tmp_path)[name]
    db = tmp_path / "runs.db"
    command = [sys.executable, "-m", "leafe_tui", "explore", "sokoban/fixed-1", "--model", TEST_MODEL]
    command += ["--adapter", str(adapter), "--db", str(db), "--budget", "1", "--max-tokens", "8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, (result.returncode, result.stderr)  # llama.cpp's crash was 139 / -11
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    if db.exists():  # no run was started (and left interrupted)
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from runs").fetchone()[0] == 0


@pytest.mark.real_model
def test_the_backend_checks_the_adapter_before_llama_cpp_loads_it(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="not a GGUF file"):
        llama.LlamaCppBackend(_model(), n_ctx=512, lora_path=bad_adapters(tmp_path)["text"])
    with pytest.raises(BackendError, match="context of 0 tokens"):
        llama.LlamaCppBackend(_model(), n_ctx=0)
