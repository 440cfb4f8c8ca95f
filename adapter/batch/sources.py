"""Reading FHIR inputs from files: Bundles, NDJSON (Bulk Data) and folders of them.

Streams resources one at a time with their location (file and line, or Bundle entry). A malformed
line or entry is reported and skipped; everything else is still read. A path that cannot be read
at all is an :class:`UnreadableInput` error: the run cannot be trusted to be complete.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from adapter.batch.scan import ObservationScanner, observation_scanner
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


#: A compressed FHIR file: found in folders and reported (it is not read), never passed over.
COMPRESSED = ".gz"


def _fhir_file(path: Path) -> bool:
    """A name a folder search takes: a FHIR suffix, or a FHIR suffix then ``.gz``."""
    if path.suffix == COMPRESSED:
        path = path.with_suffix("")
    return path.suffix in SUFFIXES


def _unreadable_folder(error: OSError) -> None:
    raise UnreadableInput(f"{error.filename}: {error.strerror}") from error


def _folder_files(folder: Path) -> list[Path]:
    """The FHIR files under `folder` (symbolic links to folders are not followed), in name
    order. A folder inside that cannot be listed is an error: the run would miss its files."""
    found = [
        path
        for root, _, names in os.walk(folder, onerror=_unreadable_folder)
        for path in (Path(root, name) for name in names)
        if _fhir_file(path) and path.is_file()
    ]
    return sorted(found)


def expand(paths: Sequence[str]) -> list[Path]:
    """Files named directly, and every FHIR file under named folders, in a stable order."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(_folder_files(path))
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise UnreadableInput(f"{raw}: not a regular file or folder")
        else:
            raise UnreadableInput(f"{raw}: no such file or folder")
    return files


#: Positions of the resources of one file: ``file index << FILE_SHIFT`` plus the byte offset of
#: the line (plus the entry's rank inside it), so that arrival order is reading order however
#: the files are split between worker processes.
FILE_SHIFT = 40


def arrival_base(file_index: int) -> int:
    return (file_index + 1) << FILE_SHIFT


@dataclass
class Counts:
    """What a reader saw besides resources: lines (blank ones too), lines skipped unparsed."""

    lines: int = 0
    skipped: int = 0


_TYPE_PREFIX = b'{"resourceType":"'

#: A byte of lines that are all parsed (dispenses, specimens) costs about this many times a byte
#: of Observation lines, and one of lines skipped by their type about this fraction (measured
#: on the benchmark export: 34-47 ms a MB parsed, 4 ms a MB of Observations).
PARSED_WEIGHT = 8.0
SKIPPED_WEIGHT = 0.1


@dataclass(frozen=True)
class Prefilter:
    """Which NDJSON lines cannot matter to the rules, told without parsing them.

    A line is skipped only when all of these hold (anything else is parsed):

    - it starts exactly with ``{"resourceType":"T"`` (the compact form every Bulk Data server
      writes), the text ``"resourceType"`` occurs nowhere else in it (no contained resource, no
      repeated key) and it has no backslash (no escape can hide a name or a code);
    - T is neither a type the rules read (`read_types`) nor a Bundle, or T is ``Observation``
      and no ``"code": "C"`` in it names one of the lab codes in mappings (`codes`: every code
      a lab role is read from; codes of any system, anywhere in the resource).

    A skipped line is counted as a resource read but never checked: a malformed one is not
    reported. ``--strict`` (no prefilter) parses and checks every line."""

    read_types: frozenset[bytes]
    codes: re.Pattern[bytes]
    #: The same test of a block of Observation lines in one compiled pass (Hyperscan), when it
    #: is installed; None: the standard library's counts and `codes` decide.
    scanner: ObservationScanner | None = field(default=None, compare=False)

    @classmethod
    def of(cls, read_types: Iterable[str], codes: Iterable[str], fast: bool = True) -> Prefilter:
        alternatives = b"|".join(re.escape(code.encode()) for code in sorted(set(codes)))
        pattern = rb'"code"\s*:\s*"(?:' + alternatives + rb')"'
        return cls(
            frozenset(kind.encode() for kind in (*read_types, "Bundle")),
            re.compile(pattern),
            observation_scanner(pattern, _OBSERVATION) if fast else None,
        )

    def weight(self, line: bytes) -> float:
        """What a byte of lines like this one costs to read, relative to a byte of Observation
        lines (most of which are skipped): far more when every line is parsed, next to nothing
        when none is. Only an estimate, for scheduling (`engine.plan`)."""
        if not line.startswith(_TYPE_PREFIX):
            return PARSED_WEIGHT  # a Bundle, or a line not in the compact form: parsed
        kind = line[17 : line.find(b'"', 17)]
        if kind == b"Observation":
            return 1.0
        return PARSED_WEIGHT if kind in self.read_types else SKIPPED_WEIGHT

    def skips(self, line: bytes) -> bool:
        if not line.startswith(_TYPE_PREFIX):
            return False
        end = line.find(b'"', 17)
        if end < 0 or line.find(b'"resourceType"', 2) >= 0 or b"\\" in line:
            return False
        kind = line[17:end]
        if kind == b"Observation":
            return self.codes.search(line) is None
        return kind not in self.read_types


def read_sources(paths: Sequence[str], problems: list[InputProblem]) -> Iterator[Located]:
    for index, path in enumerate(expand(paths)):
        yield from read_file(path, index, problems)


def read_file(
    path: Path,
    index: int,
    problems: list[InputProblem],
    start: int = 0,
    end: int | None = None,
    prefilter: Prefilter | None = None,
    counts: Counts | None = None,
) -> Iterator[Located]:
    """The resources of one file (the `index`-th of the input), or of the lines starting in
    bytes [start, end) of an NDJSON file, whose line numbers then count from `start`."""
    counts = counts if counts is not None else Counts()
    base = arrival_base(index)
    if path.suffix == COMPRESSED:
        problems.append(InputProblem(f"{path}:1", "compressed (gzip): not read; decompress it"))
        return
    if path.suffix in (".ndjson", ".jsonl"):
        yield from _ndjson(path, problems, base, start, end, prefilter, counts)
    elif streamed(path):
        yield from _streamed(path, problems, base)
    else:
        yield from _json(path, problems, base)


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


def first_line(path: Path, limit: int = 64 * 1024) -> bytes:
    """The start of the file's first line (at most `limit` bytes)."""
    try:
        with path.open("rb") as handle:
            return handle.readline(limit)
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error


def wide_file(path: Path) -> bool:
    """A UTF-16/32 file (read whole, as text: it cannot be split on byte boundaries)."""
    try:
        with path.open("rb") as handle:
            return _wide(handle.read(8))[0] is not None
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error


def _ndjson(
    path: Path,
    problems: list[InputProblem],
    base: int,
    start: int,
    end: int | None,
    prefilter: Prefilter | None,
    counts: Counts,
) -> Iterator[Located]:
    # The per-line work is kept minimal (no location string, no copy of the line): this loop
    # runs once for every resource of a Bulk Data export.
    try:
        handle = path.open("rb")
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error
    name = str(path)
    with handle:
        try:
            codec, mark = _wide(handle.read(8)) if start == 0 else (None, 0)
            if mark and codec is None:  # only the mark is wrong: every line still counts
                problems.append(_stray_mark(f"{name}:1"))
                start = mark
            handle.seek(start)
            lines: Iterable[bytes] = handle
            if codec is not None:  # UTF-16/32 with a byte order mark: read as text
                converted = _to_utf8(handle.read(), codec)
                if converted is None:
                    problems.append(InputProblem(f"{name}:1", f"not valid {codec.upper()}"))
                    return
                lines = converted.splitlines(keepends=True)
            if prefilter is not None and codec is None:
                yield from _blocks(handle, name, problems, base, start, end, prefilter, counts)
                return
            limit = end if end is not None and codec is None else None
            offset = start
            number = 0
            for line in lines:
                if limit is not None and offset >= limit:
                    break
                at = offset
                offset += len(line)
                number += 1
                if not line or line.isspace():  # blank lines are allowed, as in line.strip()
                    continue
                if line.startswith(_UTF8_BOM):  # files concatenated with their marks
                    line = line[3:]
                try:
                    resource = _parse(line)
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
                    yield from _bundle(f"{name}:{number}", resource, problems, arrival=base + at)
                else:
                    yield Located(name, resource, number, base + at)
            counts.lines += number
        except OSError as error:
            raise UnreadableInput(f"{path}: {error.strerror}") from error


#: Lines are prefiltered a block at a time: the checks run in C over the whole block.
BLOCK_BYTES = 256 * 1024
_OBSERVATION = b'{"resourceType":"Observation",'
_LINE_TYPES = re.compile(rb'\n\{"resourceType":"([^"\n]*)"')


def _blocks(
    handle: Any,
    name: str,
    problems: list[InputProblem],
    base: int,
    start: int,
    end: int | None,
    prefilter: Prefilter,
    counts: Counts,
) -> Iterator[Located]:
    """NDJSON lines [start, end) with the prefilter, a block of whole lines at a time. A block
    whose every line starts with the compact type prefix, holds ``"resourceType"`` once and no
    backslash, is decided from its line types alone (all types nothing reads: all skipped;
    all Observations: only the lines holding a lab code are parsed); any other block is read
    line by line with `Prefilter.skips`. Both give what reading line by line would."""
    offset, number = start, 0
    skip_types = prefilter.read_types | {b"Observation"}
    while end is None or offset < end:
        block = handle.read(BLOCK_BYTES if end is None else min(BLOCK_BYTES, end - offset))
        if not block:
            break
        if not block.endswith(b"\n"):
            block += handle.readline()  # to the end of the line (end falls at a line start)
        coded = _coded_observations(block, prefilter)
        if coded is not None:  # all compact Observations: parse only the lines with a lab code
            starts, numbers, lines = coded
            counts.skipped += lines - len(starts)
            for at, line_number in zip(starts, numbers, strict=True):
                stop = block.find(b"\n", at)
                line = block[at : len(block) if stop < 0 else stop + 1]
                yield from _line(name, line, number + line_number, base + offset + at, problems)
        else:
            lines = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
            kinds = _line_types(block, lines)
            if kinds is not None and kinds.isdisjoint(skip_types):
                counts.skipped += lines  # nothing the rules read
            else:
                at, index, size = 0, number, len(block)
                while at < size:  # lines end at "\n" only, as when iterating over the file
                    stop = block.find(b"\n", at)
                    stop = size if stop < 0 else stop + 1
                    here, line, at, index = at, block[at:stop], stop, index + 1
                    if line.isspace():
                        continue
                    if line.startswith(_UTF8_BOM):
                        line = line[3:]
                    if prefilter.skips(line):
                        counts.skipped += 1
                        continue
                    yield from _line(name, line, index, base + offset + here, problems)
        offset += len(block)
        number += lines
    counts.lines += number


def _coded_observations(
    block: bytes, prefilter: Prefilter
) -> tuple[list[int], list[int], int] | None:
    """When every line of the block is a compact Observation holding ``"resourceType"`` once
    and no backslash: (the start offsets of the lines naming a lab code, their line numbers
    within the block, the block's line count). None otherwise."""
    if not block.startswith(_OBSERVATION):
        return None
    scanner = prefilter.scanner
    if scanner is not None:  # one compiled pass: the codes, and no stray "resourceType" or "\"
        found = scanner.code_line_starts(block)
        if found is None:
            return None
        starts = found
    elif block.find(b"\\") >= 0:
        return None
    else:
        codes = prefilter.codes.finditer(block)
        starts = sorted({block.rfind(b"\n", 0, m.start()) + 1 for m in codes})
    numbered = _observation_lines(block, starts)
    if numbered is None:  # a line that is not a compact Observation
        return None
    numbers, lines = numbered
    if scanner is None and block.count(b'"resourceType"') != lines:
        return None
    return starts, numbers, lines


def _line_types(block: bytes, lines: int) -> set[bytes] | None:
    """The resource types of a block whose every line starts with the compact type prefix,
    holds ``"resourceType"`` once and no backslash; None for any other block."""
    if block.count(b'"resourceType"') != lines or block.find(b"\\") >= 0:
        return None
    if not block.startswith(_TYPE_PREFIX):
        return None
    close = block.find(b'"', 17)
    first = block[17:close] if close >= 0 else b"\n"  # "\n": not a type
    found = _LINE_TYPES.findall(block)  # one per line after the first, if all match
    if len(found) != lines - 1 or b"\n" in first:
        return None
    return {first, *found}


def _observation_lines(block: bytes, starts: Sequence[int]) -> tuple[list[int], int] | None:
    """The numbers within the block (from 1) of the lines starting at `starts` (ascending line
    starts), and how many lines the block has; None if a line does not start with the compact
    Observation prefix. One loop of `find` (memchr) over the newlines, with a `startswith` at
    each line: cheaper on lines of a kilobyte than `bytes.count`'s byte-by-byte loops."""
    numbers: list[int] = []
    pending = iter(starts)
    wanted = next(pending, -1)
    line, at, size = 0, 0, len(block)
    find, starts_with = block.find, block.startswith
    while at < size:
        if not starts_with(_OBSERVATION, at):
            return None
        line += 1
        if at == wanted:
            numbers.append(line)
            wanted = next(pending, -1)
        stop = find(b"\n", at)
        if stop < 0:
            break
        at = stop + 1
    return numbers, line


def _line(
    name: str, line: bytes, number: int, arrival: int, problems: list[InputProblem]
) -> Iterator[Located]:
    try:
        resource = _parse(line)
    except _DecodeError:
        problems.append(InputProblem(f"{name}:{number}", "not valid JSON"))
        return
    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        problems.append(InputProblem(f"{name}:{number}", "not a FHIR resource (no resourceType)"))
        return
    if resource["resourceType"] == "Bundle":
        yield from _bundle(f"{name}:{number}", resource, problems, arrival=arrival)
    else:
        yield Located(name, resource, number, arrival)


def _json(path: Path, problems: list[InputProblem], base: int) -> Iterator[Located]:
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
        document = _parse(raw)
    except _DecodeError as error:
        line = raw[: getattr(error, "pos", 0) or 0].count(b"\n") + 1
        problems.append(InputProblem(f"{path}:{line}", "not valid JSON"))
        return
    del raw
    if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
        problems.append(InputProblem(f"{path}:1", "not a FHIR resource (no resourceType)"))
        return
    if document["resourceType"] == "Bundle":
        yield from _bundle(str(path), document, problems, arrival=base)
    else:
        yield Located(f"{path}:1", document, 0, base)


class _Arrivals:
    """Arrival positions handed out in reading order from `next`."""

    def __init__(self, first: int) -> None:
        self.next = first

    def take(self) -> int:
        self.next += 1
        return self.next - 1


def _bundle(
    where: str,
    bundle: dict[str, Any],
    problems: list[InputProblem],
    path: str = "Bundle",
    depth: int = 1,
    arrival: int | _Arrivals = 0,
) -> Iterator[Located]:
    entries = bundle.get("entry")
    if entries is None:
        return
    if not isinstance(entries, list):
        problems.append(InputProblem(f"{where}#{path}.entry", "expected a list"))
        return
    arrivals = arrival if isinstance(arrival, _Arrivals) else _Arrivals(arrival)
    yield from _entries(
        where, enumerate(entries), _local_ids(entries), problems, path, depth, arrivals
    )


def _entries(
    where: str,
    entries: Iterable[tuple[int, Any]],
    local_ids: dict[str, str],
    problems: list[InputProblem],
    path: str,
    depth: int,
    arrivals: _Arrivals,
) -> Iterator[Located]:
    for index, entry in entries:
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
            yield from _bundle(where, resource, problems, inner, depth + 1, arrivals)
            continue
        yield Located(location, resource, 0, arrivals.take())


#: A Bundle file larger than this is streamed (two passes with an incremental parser, one entry
#: in memory at a time) rather than loaded whole.
STREAM_BYTES = 64 * 1024 * 1024
_MISSING = object()
_COMPLEX = object()  # a value that is an object or an array
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_U64_MAX = 2**64 - 1
_STARTS = frozenset({"start_map", "start_array", "string", "number", "boolean", "null"})
_OPENS = frozenset({"start_map", "start_array"})
_CLOSES = frozenset({"end_map", "end_array"})
#: The deepest nesting orjson reads (a deeper document is not valid JSON to it).
_MAX_DEPTH = 1024
#: Bytes ijson reads at a time. Its C backend builds every event of a buffer, each with its
#: prefix, before handing the first one on: a buffer of "[" made 64 KB of events with prefixes
#: up to 320 KB (about 10 GB) before the depth check could refuse the file; 4 KB bounds that to
#: tens of MB, and reads a Bundle as fast (1.9 s for 110 MB against 2.3 s with 64 KB, timed).
_IJSON_BUFFER = 4096


def streamed(path: Path) -> bool:
    """A large UTF-8 JSON file: read with the incremental parser."""
    try:
        return path.stat().st_size > STREAM_BYTES and not wide_file(path)
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error


class _Counting:
    """A binary file that counts the lines it has handed out (where a syntax error is)."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.before = 0  # newlines before the last chunk read
        self.seen = 0

    def read(self, size: int = -1) -> bytes:
        chunk: bytes = self.handle.read(size)
        self.before = self.seen
        self.seen += chunk.count(b"\n")
        return chunk


class _Fallback(Exception):
    """A shape the streaming reader does not reproduce exactly: read the file whole."""


@dataclass
class _Scan:
    """What the first streaming pass learns: the document's shape and its local ids."""

    kind: object = _MISSING
    entry: str | None = None  # the first event of Bundle.entry's value
    local_ids: dict[str, str] = field(default_factory=dict)
    ids: dict[int, str] = field(default_factory=dict)  # entry index -> id to give its resource
    #: An integer beyond 64 bits, or a number with more digits than a float holds: the second
    #: pass reads numbers exactly and converts them as `_parse` does (the C backend's floats
    #: would overflow or round).
    wide_numbers: bool = False
    #: A number orjson refuses (infinite as a double): the file is not valid JSON.
    refused: bool = False


def _scan(handle: Any) -> _Scan:
    import ijson  # only large Bundles need it

    scan = _Scan()
    index = -1
    top_keys: set[str] = set()
    full_url: object = None
    resource = False
    kind: object = _MISSING
    own: object = _MISSING
    depth = 0
    for prefix, event, value in ijson.parse(handle, buf_size=_IJSON_BUFFER):
        if event in _OPENS:
            depth += 1
            if depth > _MAX_DEPTH:
                # What orjson refuses when a Bundle is loaded whole; refused here at once, as
                # ijson's prefixes grow with the depth (see _IJSON_BUFFER).
                scan.refused = True
                return scan
        elif event in _CLOSES:
            depth -= 1
        elif event == "number":
            if type(value) is int:
                if not _I64_MIN <= value <= _I64_MAX:
                    scan.wide_numbers = True
            elif math.isinf(float(value)):
                scan.refused = True
                return scan
            elif len(value.as_tuple().digits) > _FLOAT_DIGITS:
                scan.wide_numbers = True  # more digits than a float holds: read them exactly
        if prefix == "":
            if event == "map_key":
                if value in top_keys or "." in value:
                    raise _Fallback
                top_keys.add(value)
            elif event in _STARTS and event != "start_map":
                raise _Fallback  # not an object: the whole-file reader reports it
        elif prefix == "resourceType":
            scan.kind = value if event == "string" else _COMPLEX
        elif prefix == "entry":
            if scan.entry is None and event in _STARTS:
                scan.entry = event
        elif prefix == "entry.item":
            if event == "map_key":
                if "." in value:
                    raise _Fallback
            elif event == "end_map":
                if resource and isinstance(full_url, str) and full_url.startswith("urn:"):
                    if kind is _COMPLEX or not (kind is _MISSING or isinstance(kind, str)):
                        raise _Fallback
                    local = own if isinstance(own, str) and own else full_url.rsplit(":", 1)[-1]
                    shown = None if kind is _MISSING else kind
                    scan.local_ids[full_url] = f"{shown}/{local}"
                    if own is _MISSING or own is None:
                        scan.ids[index] = local
            elif event in _STARTS:
                index += 1
                full_url, resource, kind, own = None, False, _MISSING, _MISSING
        elif prefix == "entry.item.fullUrl":
            if event in _STARTS:
                full_url = value if event == "string" else None
        elif prefix == "entry.item.resource":
            if event == "map_key":
                if "." in value:
                    raise _Fallback
            elif event in _STARTS:
                resource, kind, own = event == "start_map", _MISSING, _MISSING
        elif prefix == "entry.item.resource.resourceType":
            if event in _STARTS:
                kind = value if event == "string" else _COMPLEX
        elif prefix == "entry.item.resource.id" and event in _STARTS:
            own = _COMPLEX if event in ("start_map", "start_array") else value
    return scan


def _streamed(path: Path, problems: list[InputProblem], base: int) -> Iterator[Located]:
    """A large Bundle, streamed: a first pass checks the JSON and gathers the local
    (``urn:``) ids, a second reads one entry at a time. Memory follows the largest entry."""
    import ijson

    try:
        with path.open("rb") as raw:
            counting = _Counting(raw)
            if raw.read(3) != _UTF8_BOM:
                raw.seek(0)
            try:
                scan = _scan(counting)
            except _Fallback:
                scan = None
            except ijson.JSONError:
                scan = _Scan(refused=True)
            if scan is not None and scan.refused:
                # The line is that of the start of the buffer the error was found in.
                problems.append(InputProblem(f"{path}:{counting.before + 1}", "not valid JSON"))
                return
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error
    if scan is None or scan.kind != "Bundle":
        if scan is not None and not isinstance(scan.kind, str):
            problems.append(InputProblem(f"{path}:1", "not a FHIR resource (no resourceType)"))
            return
        yield from _json(path, problems, base)  # not a Bundle, or an odd one: read it whole
        return
    if scan.entry is None or scan.entry == "null":
        return
    if scan.entry != "start_array":
        problems.append(InputProblem(f"{path}#Bundle.entry", "expected a list"))
        return
    try:
        with path.open("rb") as raw:
            if raw.read(3) != _UTF8_BOM:
                raw.seek(0)
            items = ijson.items(
                raw, "entry.item", use_float=not scan.wide_numbers, buf_size=_IJSON_BUFFER
            )
            if scan.wide_numbers:
                items = map(_keep_exact_results, items)
            entries = enumerate(items)
            yield from _entries(
                str(path),
                _given_ids(entries, scan.ids),
                scan.local_ids,
                problems,
                "Bundle",
                1,
                _Arrivals(base),
            )
    except OSError as error:
        raise UnreadableInput(f"{path}: {error.strerror}") from error
    except ijson.JSONError:  # the first pass read it whole: not expected
        problems.append(InputProblem(f"{path}:1", "not valid JSON"))


#: A float holds 15 significant decimal digits exactly; a number with more keeps them as Decimal.
_FLOAT_DIGITS = 15
#: A number token that may have more significant digits than a float holds: digits (and
#: points) in a row, an exponent perhaps, then what may follow a JSON number (a comma, a closing
#: bracket or brace, the end). Such input is read again exactly. The test is wider than JSON's
#: grammar (digits inside a string followed by a comma match too: they only cost a re-read),
#: never narrower; a string such as an OID (``urn:oid:2.16.840.1.113883...``) ends with a quote
#: and does not match: Bulk Data identifiers carry OIDs in most lines.
_LONG_NUMBER = re.compile(rb"[0-9][0-9.]{15,}(?:[eE][+-]?[0-9]+)?\s*(?:[,}\]]|\Z)")
#: A cheap first test for `_LONG_NUMBER` (a regular expression costs ~20 us on a 1 KB line; this
#: ~3 us): digits and points become "0", a quote stays, anything else becomes a space, so that a
#: long number token is sixteen "0" then a space (or the end), and a long run inside a string
#: that ends there (an OID) is followed by a quote instead. Wider than `_LONG_NUMBER`, never
#: narrower: whatever it lets through is then matched exactly.
_DIGIT_RUNS = bytes(
    ord("0") if chr(byte) in "0123456789." else byte if byte == ord('"') else ord(" ")
    for byte in range(256)
)
_LONG_RUN = b"0" * (_FLOAT_DIGITS + 1)


def _may_hold_long_number(data: bytes) -> bool:
    runs = data.translate(_DIGIT_RUNS)
    if _LONG_RUN + b" " not in runs and not runs.endswith(_LONG_RUN):
        return False
    return _LONG_NUMBER.search(data) is not None


def _parse(data: bytes) -> Any:
    """JSON bytes as orjson reads them, except that a number with more than 15 significant digits
    inside an Observation stays an exact Decimal: a result is never rounded before it is
    categorised (999.99999999999999999 is moderate, not the float 1000.0). Raises `_DecodeError`."""
    value = _loads(data)
    if not _may_hold_long_number(data):
        return value
    import json  # rarely needed: only for input with such long digit runs

    try:
        exact = json.loads(data, parse_float=Decimal)
    except (ValueError, RecursionError):  # what orjson read is kept
        return value
    return _keep_exact_results(exact)


def _keep_exact_results(node: Any) -> Any:
    """Numbers as orjson reads them (integers within 64 bits as int, any other number as the
    nearest float), except the long numbers of Observations, kept exact (iterative)."""
    root = [node]
    stack: list[tuple[Any, Any, bool]] = [(root, 0, False)]
    while stack:
        container, key, in_result = stack.pop()
        value = container[key]
        if isinstance(value, dict):
            inner = in_result or value.get("resourceType") == "Observation"
            stack.extend((value, k, inner) for k in value)
        elif isinstance(value, list):
            stack.extend((value, i, in_result) for i in range(len(value)))
        elif isinstance(value, Decimal):
            if not (in_result and len(value.as_tuple().digits) > _FLOAT_DIGITS):
                container[key] = float(value)
        elif type(value) is int and not _I64_MIN <= value <= _U64_MAX:
            container[key] = float(value)
    return root[0]


def _given_ids(
    entries: Iterable[tuple[int, Any]], ids: dict[int, str]
) -> Iterator[tuple[int, Any]]:
    """Entries with the ids the first pass gave resources that have none (as `_local_ids`)."""
    for index, entry in entries:
        local = ids.get(index)
        if (
            local is not None
            and isinstance(entry, dict)
            and isinstance(entry.get("resource"), dict)
        ):
            entry["resource"]["id"] = local
        yield index, entry


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
