"""A model served over HTTP behind an OpenAI-compatible chat API (registry name ``openai``).

One client for llama-cpp-python's server (``python -m llama_cpp.server``), llama.cpp's
``llama-server``, vLLM and SGLang: they share ``/v1/chat/completions`` and differ in two things
leafe needs, which this module carries per server kind:

- the request field that constrains a reply with a grammar (GBNF for the llama.cpp servers,
  ``structured_outputs.grammar`` for vLLM, ``ebnf`` for SGLang; none for a plain OpenAI API, where a
  constrained run is refused in one sentence rather than sent unconstrained);
- where the reply reports prompt tokens reused from the server's prefix cache
  (``usage.prompt_tokens_details.cached_tokens`` for vLLM and SGLang when their report is switched
  on, ``timings.cache_n`` for llama-server; llama-cpp-python's server reports none).

The kind is read from ``/v1/models`` (``owned_by``) when the backend opens, or given as the spec
option ``server``. Prefix reuse across branches is the server's business, so ``save_prefix`` keeps
nothing here. The client is plain ``urllib``: each call is its own request, so several threads may
share one backend. Network trouble becomes one sentence (``BackendError``); 429 and 5xx-busy answers
and dropped connections are retried with back-off first.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.backends.base import BackendError, Completion, Message, ModelBackend

if TYPE_CHECKING:
    from engine.specs import ModelSpec

API_KEY_ENV = "LEAFE_API_KEY"  # read at open, never recorded in a spec
RETRY_STATUS = {429, 502, 503, 504}


@dataclass(frozen=True)
class ServerKind:
    """What differs between OpenAI-compatible servers, as far as leafe is concerned."""

    name: str
    grammar_field: Callable[[str], dict[str, Any]] | None  # None: the server takes no grammar


SERVER_KINDS: dict[str, ServerKind] = {
    kind.name: kind
    for kind in (
        ServerKind("llama.cpp", lambda g: {"grammar": g}),
        ServerKind("vllm", lambda g: {"structured_outputs": {"grammar": g}}),
        ServerKind("sglang", lambda g: {"ebnf": g}),
        ServerKind("openai", None),
    )
}
# ``owned_by`` in /v1/models names the server: llama-cpp-python says "me", llama-server "llamacpp".
_OWNERS = {"me": "llama.cpp", "llamacpp": "llama.cpp", "vllm": "vllm", "sglang": "sglang"}


def api_url(base_url: str) -> str:
    """The API root of a server given as ``http://host:port`` or ``http://host:port/v1``."""
    url = base_url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BackendError(f"the server URL {base_url!r} must start with http:// or https://")
    return url if url.endswith("/v1") else url + "/v1"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a busy or unreachable server is asked again."""

    tries: int = 6
    first_wait: float = 0.5  # doubled after each try, capped at max_wait
    max_wait: float = 8.0
    timeout: float = 600.0  # seconds one call may take (a long reply on a slow server)

    def waits(self) -> list[float]:
        return [min(self.first_wait * 2**i, self.max_wait) for i in range(self.tries - 1)]


DEFAULT_RETRY = RetryPolicy()


class ServedBackend(ModelBackend):
    """A chat model answered by an OpenAI-compatible server."""

    concurrent_calls = True  # each call is its own request; the server batches concurrent ones

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        server: str | None = None,
        api_key: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        if not model:
            raise BackendError("a served model needs its name on the server: give --model NAME")
        self.url = api_url(base_url)
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV)
        self.retry = retry or DEFAULT_RETRY
        served = self._served_models()
        if served is not None and model not in {m.get("id") for m in served}:
            names = ", ".join(str(m.get("id")) for m in served) or "none"
            raise BackendError(
                f"the server at {self.url} does not serve a model {model!r}; it serves: {names}"
            )
        if server is None:
            owner = next((str(m.get("owned_by", "")) for m in served or [] if m.get("id") == model), "")
            server = _OWNERS.get(owner.lower(), "openai")
        if server not in SERVER_KINDS:
            raise BackendError(f"unknown server kind {server!r}; known: {', '.join(SERVER_KINDS)}")
        self.kind = SERVER_KINDS[server]
        self.name = f"openai:{model}@{self.url}"

    @classmethod
    def from_spec(cls, spec: ModelSpec) -> ServedBackend:
        if not spec.base_url:
            raise BackendError("the openai backend needs the server's URL: give --base-url URL")
        return cls(spec.base_url, spec.model, server=spec.options.get("server"))

    # --- HTTP --------------------------------------------------------------------------------
    def _request(
        self, path: str, body: dict[str, Any] | None = None, *, retry: bool = True
    ) -> dict[str, Any]:
        """One API call, retried while the server is busy or unreachable; BackendError when it fails."""
        waits = self.retry.waits() if retry else []
        while True:
            try:
                return self._send(path, body)
            except _Transient as exc:
                if not waits:
                    tries = f" (after {self.retry.tries} tries)" if retry else ""
                    raise BackendError(f"{exc}{tries}") from None
                time.sleep(exc.retry_after if exc.retry_after is not None else waits[0])
                waits.pop(0)

    def _send(self, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.retry.timeout) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            if exc.code in RETRY_STATUS:
                raise _Transient(
                    f"the model server at {self.url} is busy ({exc.code}: {message})", _retry_after(exc)
                ) from None
            if exc.code in (401, 403):
                raise BackendError(
                    f"the model server at {self.url} refused the request ({exc.code}: {message}); "
                    f"set its API key in ${API_KEY_ENV}"
                ) from None
            raise BackendError(f"the model server at {self.url} answered {exc.code}: {message}") from None
        except TimeoutError:
            raise BackendError(
                f"the model server at {self.url} did not answer within {self.retry.timeout:g} s"
            ) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise BackendError(
                    f"the model server at {self.url} did not answer within {self.retry.timeout:g} s"
                ) from None
            raise _Transient(f"cannot reach the model server at {self.url} ({_reason(exc.reason)})") from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:  # dropped mid-answer
            raise _Transient(
                f"the model server at {self.url} dropped the connection ({_reason(exc)})"
            ) from None
        try:
            parsed = json.loads(raw)
        except ValueError:
            raise BackendError(
                f"the model server at {self.url} answered something that is not JSON"
            ) from None
        if not isinstance(parsed, dict):
            raise BackendError(f"the model server at {self.url} answered JSON that is not an object")
        return parsed

    def _served_models(self) -> list[dict[str, Any]] | None:
        """The models the server lists; None when it has no listing (the name is then not checked)."""
        try:  # asked once: a server that is not there at the start is not waited for
            listing = self._request("/models", retry=False)
        except BackendError as exc:
            if " answered 404" in str(exc):
                return None
            raise
        data = listing.get("data")
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else None

    # --- calls -------------------------------------------------------------------------------
    def complete(
        self,
        messages: list[Message],
        *,
        temperature: float,
        max_tokens: int,
        seed: int,
        grammar: str | None = None,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
            "stream": False,
        }
        if grammar is not None:
            if self.kind.grammar_field is None:
                raise BackendError(
                    f"the server at {self.url} takes no grammar ({self.kind.name} API); run with --no-grammar"
                )
            body.update(self.kind.grammar_field(grammar))
        started = time.perf_counter()
        answer = self._request("/chat/completions", body)
        seconds = time.perf_counter() - started
        try:
            text = answer["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"the model server at {self.url} answered without a reply message") from None
        usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
        try:
            return Completion(
                text=str(text),
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                cached_tokens=_cached_tokens(answer),
                generated_tokens=int(usage.get("completion_tokens") or 0),
                seconds=seconds,
            )
        except (TypeError, ValueError):
            raise BackendError(
                f"the model server at {self.url} reported token counts that are not numbers"
            ) from None


class _Transient(Exception):
    """A failure worth another try: a busy server, a refused or dropped connection."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _cached_tokens(answer: dict[str, Any]) -> int:
    """Prompt tokens the server took from its prefix cache, where it says (0 where it does not)."""
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    details = usage.get("prompt_tokens_details") or {}
    if isinstance(details, dict) and details.get("cached_tokens") is not None:
        return int(details["cached_tokens"])
    timings = answer.get("timings") or {}
    if isinstance(timings, dict) and timings.get("cache_n") is not None:
        return int(timings["cache_n"])
    return 0


def _error_message(exc: urllib.error.HTTPError) -> str:
    """The server's own words from an error answer (OpenAI's ``error.message``, FastAPI's ``detail``)."""
    try:
        body = json.loads(exc.read() or b"{}")
    except (ValueError, OSError, http.client.HTTPException):
        return str(exc.reason)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return " ".join(str(error["message"]).split())[:300]
    if isinstance(error, str):
        return error[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    if detail:
        return " ".join(str(detail).split())[:300]
    return str(exc.reason)


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused: is it running?"
    return str(reason) or type(reason).__name__
