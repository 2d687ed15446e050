"""Plain Python values to and from JSON, exactly: what crosses between a candidate and its judge.

A candidate function runs in the sandbox and its results come back as JSON text. The judge decodes
that text into fresh plain values (None, bool, int, float, complex, str, bytes, list, tuple, dict,
set, frozenset, nested) and compares those, so nothing the candidate defines (a class whose
``__eq__`` always says yes, a ``str`` subclass) can take part in its own verdict. Types are checked
exactly (``type(x) is int``), so subclasses are refused rather than trusted.

This module is standard library only and self-contained: its source is embedded as-is into the
programs that run in the sandbox and in the checker process (see ``function_check``).
"""

import json

MAX_DEPTH = 64


class NotPlainData(Exception):
    """A value that is not plain data (or is nested too deeply) cannot cross to the judge."""


def encode_plain(value, depth=0):
    """``value`` as a JSON-ready structure; raises NotPlainData for anything else."""
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deeply")
    kind = type(value)
    if value is None or kind is bool or kind is str or kind is int:
        return value
    if kind is float:
        return {"float": repr(value)}
    if kind is list:
        return [encode_plain(item, depth + 1) for item in value]
    if kind is tuple:
        return {"tuple": [encode_plain(item, depth + 1) for item in value]}
    if kind is dict:
        return {"dict": [[encode_plain(k, depth + 1), encode_plain(v, depth + 1)] for k, v in value.items()]}
    if kind is set or kind is frozenset:
        return {kind.__name__: [encode_plain(item, depth + 1) for item in value]}
    if kind is bytes:
        return {"bytes": value.hex()}
    if kind is complex:
        return {"complex": [repr(value.real), repr(value.imag)]}
    raise NotPlainData(f"a {kind.__name__} object")


def decode_plain(data, depth=0):
    """The plain value an ``encode_plain`` structure stands for; raises NotPlainData if malformed."""
    if depth > MAX_DEPTH:
        raise NotPlainData("nested too deeply")
    kind = type(data)
    if data is None or kind is bool or kind is str or kind is int:
        return data
    if kind is list:
        return [decode_plain(item, depth + 1) for item in data]
    if kind is not dict or len(data) != 1:
        raise NotPlainData("malformed value")
    ((tag, body),) = data.items()
    try:
        if tag == "float":
            return float(body)
        if tag == "tuple":
            return tuple(decode_plain(item, depth + 1) for item in body)
        if tag == "dict":
            return {decode_plain(k, depth + 1): decode_plain(v, depth + 1) for k, v in body}
        if tag == "set":
            return {decode_plain(item, depth + 1) for item in body}
        if tag == "frozenset":
            return frozenset(decode_plain(item, depth + 1) for item in body)
        if tag == "bytes":
            return bytes.fromhex(body)
        if tag == "complex":
            return complex(float(body[0]), float(body[1]))
    except (TypeError, ValueError) as exc:  # unhashable keys, bad hex, wrong shapes
        raise NotPlainData(f"malformed {tag}: {exc}") from None
    raise NotPlainData(f"unknown tag {tag!r}")


def plain_key(args, kwargs):
    """A canonical text for a call's arguments (the same call always gives the same text)."""
    return json.dumps([encode_plain(list(args)), encode_plain(dict(sorted(kwargs.items())))])
