"""Mutations of FHIR NDJSON lines: byte-level damage and structural damage of the JSON.

Each mutation takes one line (bytes) and a random source and returns the bytes that replace it
(possibly several lines, possibly none). Classes: deletions, wrong types, huge and tiny numbers,
extreme dates, deep nesting, invalid UTF-8, byte order marks, truncation, Bundles in Bundles.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xff\xfe\x00\x00")
INVALID_UTF8 = (b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x80")
NUMBERS: tuple[Any, ...] = (
    0,
    -1,
    -0.0,
    1e9,
    1000000000,
    10**18,
    10**30,
    -(10**40),
    1e308,
    -1e308,
    5e-324,
    1e-300,
    0.1,
    999.9,
    1499.85,
    2**63,
    2**64 + 1,
)
NUMBER_STRINGS = ("1e999999", "-1e999999", "1e-999999", "NaN", "Infinity", "-Infinity", "1" * 5000)
DATES = (
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T00:00:00-14:00",
    "0001-01-01",
    "0001",
    "9999-12-31T23:59:59-14:00",
    "9999-12-31T23:59:59.999999999+14:00",
    "9999-12-31",
    "2026-02-30",
    "2026-02-29T10:00:00Z",
    "2024-02-29",
    "2026-03-02T23:59:60Z",
    "2016-12-31T23:59:60Z",
    "2026",
    "2026-03",
    "2026-13",
    "2026-03-02T25:00:00Z",
    "2026-03-02T10:00:00",
    "2026-03-02T10:00Z",
    "2026-03-02T10:00:00+15:00",
    "2026-03-02T10:00:00.1234567891Z",
    "20260302",
    "2026-W10-1",
    "",
    " 2026-03-02",
    "1800-01-01T00:00:00+14:00",
    "2999-12-31T23:59:59-14:00",
)
STRINGS = ("", " ", "\u0000", "\ud800", "x" * 100000, "Patient/", "Patient/../x", "#", "urn:uuid:")


def _paths(node: Any) -> list[tuple[Any, ...]]:
    """Every element's path (iterative; elements nested deeper than 40 levels are skipped)."""
    found: list[tuple[Any, ...]] = []
    stack: list[tuple[Any, tuple[Any, ...]]] = [(node, ())]
    while stack:
        item, prefix = stack.pop()
        found.append(prefix)
        if len(prefix) >= 40:
            continue
        if isinstance(item, dict):
            stack.extend((value, (*prefix, key)) for key, value in item.items())
        elif isinstance(item, list):
            stack.extend((value, (*prefix, index)) for index, value in enumerate(item))
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        node = node[step]
    return node


def _set(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    _get(node, path[:-1])[path[-1]] = value
    return node


def _delete(node: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return {}
    parent = _get(node, path[:-1])
    del parent[path[-1]]
    return node


def _nest(value: Any, depth: int, rng: random.Random) -> Any:
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"x": value}
    return value


def wrong_value(rng: random.Random) -> Any:
    kind = rng.randrange(8)
    if kind == 0:
        return rng.choice(NUMBERS)
    if kind == 1:
        return rng.choice(NUMBER_STRINGS)
    if kind == 2:
        return rng.choice(DATES)
    if kind == 3:
        return rng.choice(STRINGS)
    if kind == 4:
        return rng.choice([None, True, False, [], {}, [None], [[]], {"": None}])
    if kind == 5:
        return _nest(rng.choice([1, "x", None]), rng.randrange(1, 1020), rng)
    if kind == 6:
        return {"value": rng.choice(NUMBERS + NUMBER_STRINGS)}
    return rng.choice([1, "1", 1.5, [1], {"a": 1}])


def structural(line: bytes, rng: random.Random) -> bytes:
    """Parse, damage one or a few elements, serialise."""
    try:
        resource = json.loads(line)
    except (ValueError, RecursionError):
        return bytes_level(line, rng)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        paths = _paths(resource)
        path = rng.choice(paths)
        move = rng.randrange(10)
        if move == 0 and path:
            resource = _delete(resource, path)
        elif move == 1:
            resource = _set(
                resource, path, _nest(_get(resource, path), rng.randrange(1, 1020), rng)
            )
        elif move == 2 and isinstance(resource, dict):
            kind = rng.choice(("collection", "transaction", "batch", "searchset", None))
            inner: Any = resource
            for _ in range(rng.randrange(1, 4)):
                inner = {"resourceType": "Bundle", "type": kind, "entry": [{"resource": inner}]}
            resource = inner
        elif move == 3 and isinstance(resource, dict):
            element = rng.choice(
                (
                    "effectiveDateTime",
                    "issued",
                    "whenHandedOver",
                    "whenPrepared",
                    "onsetDateTime",
                    "abatementDateTime",
                    "identifiedDateTime",
                )
            )
            resource[element] = rng.choice(DATES)
        elif move == 4 and isinstance(resource, dict):
            resource["daysSupply"] = rng.choice(
                [{"value": v} for v in NUMBERS + NUMBER_STRINGS] + [5, "x", None, []]
            )
        elif move == 5 and isinstance(resource, dict):
            quantity = resource.get("valueQuantity")
            if isinstance(quantity, dict):
                quantity["value"] = rng.choice(NUMBERS + NUMBER_STRINGS + DATES[:2])
            else:
                resource["valueQuantity"] = wrong_value(rng)
        elif move == 6 and isinstance(resource, dict):
            key = rng.choice(
                (
                    "subject",
                    "code",
                    "status",
                    "meta",
                    "identifier",
                    "extension",
                    "category",
                    "performer",
                    "mitigation",
                    "evidence",
                    "contained",
                    "effectivePeriod",
                    "medicationCodeableConcept",
                    "medicationReference",
                    "authorizingPrescription",
                    "entry",
                    "resourceType",
                    "id",
                    "patient",
                    "implicated",
                    "period",
                    "clinicalStatus",
                    "specimen",
                )
            )
            resource[key] = wrong_value(rng)
        else:
            resource = _set(resource, path, wrong_value(rng))
    try:
        return json.dumps(resource, ensure_ascii=rng.random() < 0.5).encode(
            "utf-8", "surrogatepass"
        )
    except (ValueError, RecursionError):
        return line


def bytes_level(line: bytes, rng: random.Random) -> bytes:
    """Damage the bytes: delete, insert, flip, truncate, invalid UTF-8, BOMs, split, repeat."""
    data = bytearray(line)
    move = rng.randrange(9)
    at = rng.randrange(len(data) + 1)
    if move == 0 and data:
        del data[at : at + rng.randrange(1, 64)]
    elif move == 1:
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
    elif move == 2 and data:
        data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
    elif move == 3:
        del data[at:]
    elif move == 4:
        data[at:at] = rng.choice(INVALID_UTF8)
    elif move == 5:
        data[0:0] = rng.choice(BOMS)
    elif move == 6:
        data[at:at] = b"\n"
    elif move == 7:
        data = bytearray(b"[" * 1024 + b"]" * 1024 if rng.random() < 0.5 else b"{" + data)
    else:
        data = data + b"\n" + data
    return bytes(data)


MUTATIONS: tuple[Callable[[bytes, random.Random], bytes], ...] = (structural, bytes_level)


def mutate(line: bytes, rng: random.Random) -> bytes:
    return structural(line, rng) if rng.random() < 0.6 else bytes_level(line, rng)
