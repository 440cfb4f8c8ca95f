"""Reading FHIR inputs from files: Bundles, NDJSON (Bulk Data) and folders of them.

Streams resources one at a time with their location (file and line, or Bundle entry). A malformed
line or entry is reported and skipped; everything else is still read. A path that cannot be read
at all is an :class:`UnreadableInput` error: the run cannot be trusted to be complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from adapter.errors import UnreadableInputError
from adapter.fhir.collect import InputProblem as InputProblem
from adapter.fhir.collect import Located as Located

try:  # the fastest parser available; the standard library otherwise
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _DecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    _loads = json.loads
    _DecodeError = json.JSONDecodeError

SUFFIXES = (".ndjson", ".jsonl", ".json")
#: A Bundle inside a Bundle is read, down to this many levels; deeper ones are reported.
MAX_BUNDLE_DEPTH = 4
_UTF8_BOM = b"\xef\xbb\xbf"
# Longest first: the UTF-32 LE mark starts with the UTF-16 LE one.
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


class UnreadableInput(UnreadableInputError, OSError):
    """A source path that does not exist or cannot be read."""


def expand(paths: Sequence[str]) -> list[Path]:
    """Files named directly, and every FHIR file under named folders, in a stable order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UnreadableInput(f"{raw}: no such file or folder")
    return files


def read_sources(paths: Sequence[str], problems: list[InputProblem]) -> Iterator[Located]:
    for path in expand(paths):
        if path.suffix in (".ndjson", ".jsonl"):
            yield from _ndjson(path, problems)
        else:
            yield from _json(path, problems)


def _wide(head: bytes) -> tuple[str | None, int]:
    """(codec, mark length) of a UTF-16 / UTF-32 file known by its byte order mark.

    JSON starts with an ASCII character, which UTF-16/32 write with a zero byte and UTF-8 never
    does: a mark followed by no zero byte is a stray mark on a UTF-8 file: (None, its length).
    No mark: (None, 0).
    """
    for bom, codec in _WIDE_BOMS:
        if head.startswith(bom):
            genuine = b"\x00" in head[len(bom) : len(bom) + 4]
            return (codec if genuine else None), len(bom)
    return None, 0


def _stray_mark(where: str) -> InputProblem:
    return InputProblem(where, "a UTF-16/32 byte order mark on a UTF-8 file: read as UTF-8")


def _to_utf8(raw: bytes, codec: str) -> bytes | None:
    try:
        return raw.decode(codec).encode("utf-8")
    except (UnicodeError, ValueError):
        return None


def _ndjson(path: Path, problems: list[InputProblem]) -> Iterator[Located]:
    # The per-line work is kept minimal (no location string, no copy of the line): this loop
    # runs once for every resource of a Bulk Data export.
    try:
        handle = path.open("rb")
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error
    name = str(path)
    with handle:
        try:
            codec, mark = _wide(handle.read(8))
            handle.seek(0)
            lines: Iterable[bytes] = handle
            if codec is not None:  # UTF-16/32 with a byte order mark: read as text
                converted = _to_utf8(handle.read(), codec)
                if converted is None:
                    problems.append(InputProblem(f"{name}:1", f"not valid {codec.upper()}"))
                    return
                lines = converted.splitlines()
            elif mark:  # only the mark is wrong: every line still counts
                problems.append(_stray_mark(f"{name}:1"))
                handle.seek(mark)
            for number, line in enumerate(lines, start=1):
                if not line or line.isspace():  # blank lines are allowed, as in line.strip()
                    continue
                if line.startswith(_UTF8_BOM):  # files concatenated with their marks
                    line = line[3:]
                try:
                    resource = _loads(line)
                except _DecodeError:
                    problems.append(InputProblem(f"{name}:{number}", "not valid JSON"))
                    continue
                if not isinstance(resource, dict) or not isinstance(
                    resource.get("resourceType"), str
                ):
                    problems.append(
                        InputProblem(f"{name}:{number}", "not a FHIR resource (no resourceType)")
                    )
                    continue
                if resource["resourceType"] == "Bundle":
                    yield from _bundle(f"{name}:{number}", resource, problems)
                else:
                    yield Located(name, resource, number)
        except OSError as error:
            raise UnreadableInput(f"{path}: {error.strerror}") from error


def _json(path: Path, problems: list[InputProblem]) -> Iterator[Located]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error
    codec, mark = _wide(raw[:8])
    if codec is not None:
        converted = _to_utf8(raw, codec)
        if converted is None:
            problems.append(InputProblem(f"{path}:1", f"not valid {codec.upper()}"))
            return
        raw = converted
    elif mark:  # only the mark is wrong: the rest is read as UTF-8
        problems.append(_stray_mark(f"{path}:1"))
        raw = raw[mark:]
    elif raw.startswith(_UTF8_BOM):
        raw = raw[3:]
    try:
        document = _loads(raw)
    except _DecodeError as error:
        line = raw[: getattr(error, "pos", 0) or 0].count(b"\n") + 1
        problems.append(InputProblem(f"{path}:{line}", "not valid JSON"))
        return
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        problems.append(InputProblem(f"{path}:1", "not a FHIR resource (no resourceType)"))
        return
    if document["resourceType"] == "Bundle":
        yield from _bundle(str(path), document, problems)
    else:
        yield Located(f"{path}:1", document)


def _bundle(
    where: str,
    bundle: dict[str, Any],
    problems: list[InputProblem],
    path: str = "Bundle",
    depth: int = 1,
) -> Iterator[Located]:
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        problems.append(InputProblem(f"{where}#{path}.entry", "expected a list"))
        return
    local_ids = _local_ids(entries)
    for index, entry in enumerate(entries):
        location = f"{where}#{path}.entry[{index}]"
        if not isinstance(entry, dict):
            problems.append(InputProblem(location, "Bundle.entry is not an object"))
            continue
        resource = entry.get("resource")
        if resource is None:
            continue  # a request-only entry (e.g. DELETE) or a response: nothing to read
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            problems.append(InputProblem(location, "Bundle.entry.resource is not a FHIR resource"))
            continue
        if local_ids:
            resource = _resolve_local(resource, local_ids)
        if resource["resourceType"] == "Bundle":  # a Bundle in a Bundle: read its entries
            if depth >= MAX_BUNDLE_DEPTH:
                problems.append(
                    InputProblem(location, f"a Bundle nested deeper than {MAX_BUNDLE_DEPTH} levels")
                )
                continue
            inner = f"{path}.entry[{index}].resource"
            yield from _bundle(where, resource, problems, inner, depth + 1)
            continue
        yield Located(location, resource)


def _local_ids(entries: list[Any]) -> dict[str, str]:
    """``urn:uuid:`` / ``urn:oid:`` fullUrls -> "Type/id", as a transaction Bundle links entries."""
    found: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("resource"), dict):
            continue
        full_url = entry.get("fullUrl")
        resource = entry["resource"]
        if isinstance(full_url, str) and full_url.startswith("urn:"):
            own = resource.get("id")
            local = own if isinstance(own, str) and own else full_url.rsplit(":", 1)[-1]
            found[full_url] = f"{resource.get('resourceType')}/{local}"
            if own is None:
                resource["id"] = local
    return found


def _resolve_local(node: Any, local_ids: dict[str, str]) -> Any:
    """A copy of `node` with local references resolved. Iterative: a resource may nest as deep as
    the JSON parser allows (1024 levels) without exhausting Python's stack."""
    root = [node]
    stack: list[tuple[Any, Any]] = [(root, 0)]
    while stack:
        container, key = stack.pop()
        value = container[key]
        if isinstance(value, dict):
            copy = dict(value)
            ref = copy.get("reference")
            if isinstance(ref, str) and ref in local_ids:
                copy["reference"] = local_ids[ref]
            stack.extend((copy, k) for k, v in copy.items() if isinstance(v, dict | list))
        elif isinstance(value, list):
            copy = list(value)  # type: ignore[assignment]
            stack.extend((copy, i) for i, v in enumerate(copy) if isinstance(v, dict | list))
        else:
            continue
        container[key] = copy
    return root[0]
