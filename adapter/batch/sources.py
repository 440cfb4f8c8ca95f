"""Reading FHIR inputs from files: Bundles, NDJSON (Bulk Data) and folders of them.

Streams resources one at a time with their location (file and line, or Bundle entry). A malformed
line or entry is reported and skipped; everything else is still read. A path that cannot be read
at all is an :class:`UnreadableInput` error: the run cannot be trusted to be complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from adapter.errors import UnreadableInputError

try:  # the fastest parser available; the standard library otherwise
    import orjson

    _loads: Callable[[bytes], Any] = orjson.loads
    _DecodeError: type[Exception] = orjson.JSONDecodeError
except ImportError:  # pragma: no cover - orjson is a declared dependency
    import json

    _loads = json.loads
    _DecodeError = json.JSONDecodeError

SUFFIXES = (".ndjson", ".jsonl", ".json")


class UnreadableInput(UnreadableInputError, OSError):
    """A source path that does not exist or cannot be read."""


@dataclass(frozen=True)
class InputProblem:
    location: str  # "file:line" or "file#entry[n]"
    message: str  # names the FHIR path; never quotes values from the resource

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class Located(NamedTuple):
    """A resource and where it was read. A tuple, with the location formatted only when asked
    for (a problem to report): one is made for every line of an export."""

    where: str  # the file, or "file:line#Bundle.entry[n]"
    resource: dict[str, Any]
    line: int = 0  # the line in ``where``; 0 when ``where`` is already complete

    @property
    def location(self) -> str:
        return f"{self.where}:{self.line}" if self.line else self.where


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


def _ndjson(path: Path, problems: list[InputProblem]) -> Iterator[Located]:
    # The per-line work is kept minimal (no location string, no copy of the line): this loop
    # runs once for every resource of a Bulk Data export.
    try:
        handle = path.open("rb")
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error
    name = str(path)
    with handle:
        for number, line in enumerate(handle, start=1):
            if not line or line.isspace():  # blank lines are allowed, as in line.strip()
                continue
            try:
                resource = _loads(line)
            except _DecodeError:
                problems.append(InputProblem(f"{name}:{number}", "not valid JSON"))
                continue
            if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
                problems.append(
                    InputProblem(f"{name}:{number}", "not a FHIR resource (no resourceType)")
                )
                continue
            if resource["resourceType"] == "Bundle":
                yield from _bundle(f"{name}:{number}", resource, problems)
            else:
                yield Located(name, resource, number)


def _json(path: Path, problems: list[InputProblem]) -> Iterator[Located]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error
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


def _bundle(where: str, bundle: dict[str, Any], problems: list[InputProblem]) -> Iterator[Located]:
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        problems.append(InputProblem(where, "Bundle.entry is not a list"))
        return
    local_ids = _local_ids(entries)
    for index, entry in enumerate(entries):
        location = f"{where}#Bundle.entry[{index}]"
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
            local = resource.get("id") or full_url.rsplit(":", 1)[-1]
            found[full_url] = f"{resource.get('resourceType')}/{local}"
            resource.setdefault("id", local)
    return found


def _resolve_local(node: Any, local_ids: dict[str, str]) -> Any:
    if isinstance(node, dict):
        ref = node.get("reference")
        resolved = {key: _resolve_local(value, local_ids) for key, value in node.items()}
        if isinstance(ref, str) and ref in local_ids:
            resolved["reference"] = local_ids[ref]
        return resolved
    if isinstance(node, list):
        return [_resolve_local(item, local_ids) for item in node]
    return node
