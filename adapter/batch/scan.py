"""One compiled pass over a block of NDJSON lines: which lines of a block of Observations hold
a lab code (issue 16, the prefilter's fast path).

The prefilter's test of a block (every line a compact Observation with one ``"resourceType"``
and no backslash; which of them name a lab code) costs about 3.4 ns a byte with the standard
library (three counts and a regular expression); orjson parses at 4-6 ns a byte, so skipping
saved little. Hyperscan (Intel's SIMD regular-expression engine; the ``hyperscan`` package
bundles it) finds the codes and any misplaced ``"resourceType"`` or backslash in one pass of
two patterns at about 0.7 ns a byte; with the two counts that remain, about 1.7 ns a byte. Without
it (a platform with no wheel), :func:`observation_scanner` returns None and the standard
library decides: the same lines either way (tests/test_batch_scale.py).

Compiling the two patterns takes 4-6 ms, a tenth of a run over 10k Observations; the compiled
database is therefore kept in the user's cache folder (``rems-adapter/scan`` under
``~/.cache`` on Linux), named by what it was compiled from, and loaded in microseconds by the
next run. A cached file that does not load (another Hyperscan, another CPU, damaged) is
compiled again and replaced; a cache folder that cannot be written is done without.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from platformdirs import user_cache_path

try:
    import hyperscan

    AVAILABLE = True
    _VERSION = getattr(hyperscan, "__version__", "?")
except ImportError:  # pragma: no cover - a platform without a hyperscan wheel
    AVAILABLE = False

_CODE, _ELSEWHERE = range(2)


class ObservationScanner(Protocol):
    def code_line_starts(self, block: bytes) -> list[int] | None: ...


class _Hyperscan:
    """Not thread-safe (one scratch space): batch mode makes one per process."""

    def __init__(self, codes: bytes, prefix: bytes) -> None:
        expressions = [
            codes,  # a lab code: its line is parsed
            # "resourceType" anywhere but right after a line's opening brace (a contained or
            # nested resource, a repeated key), or a backslash (an escape could hide a code)
            rb'(?:[^\n]\{|[^{])"resourceType"|\\',
        ]
        self.prefix = prefix
        self.database = _database(expressions, [0, hyperscan.HS_FLAG_SINGLEMATCH])
        self._ends: list[int] = []

    def _on_match(self, pattern: int, _start: int, end: int, _flags: int, _context: Any) -> bool:
        if pattern != _CODE:
            return True  # the block is not uniform: stop, the general path reads it
        self._ends.append(end)
        return False

    def code_line_starts(self, block: bytes) -> list[int] | None:
        """The start offsets (ascending) of the lines holding a lab code, when the block starts
        with `prefix` and holds ``"resourceType"`` only right after a line's opening brace, and
        no backslash; None otherwise. The caller still checks that every line starts with
        `prefix` (a count: faster than any pattern for it)."""
        if not block.startswith(self.prefix):
            return None
        ends: list[int] = []
        self._ends = ends
        try:
            self.database.scan(block, match_event_handler=self._on_match)
        except hyperscan.ScanTerminated:
            return None
        return sorted({block.rfind(b"\n", 0, end) + 1 for end in ends})


def _database(expressions: list[bytes], flags: list[int]) -> Any:
    """The block-mode database of these expressions (ids in order): from the cache, or
    compiled (and cached)."""
    cached = _cache_file(expressions, flags)
    try:
        kept = cached.read_bytes()
        digest, serialized = kept[:_DIGEST], kept[_DIGEST:]
        # Hyperscan checks a database it loads, but not every byte: a damaged one must never
        # skip a line it should not, so the file carries its own digest.
        if hashlib.sha256(serialized).digest() == digest:
            database = hyperscan.loadb(serialized, hyperscan.HS_MODE_BLOCK)
            database.scratch = hyperscan.Scratch(database)
            return database
    except (OSError, hyperscan.error):
        pass  # not cached yet, or not loadable here: compiled below
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=expressions,
        ids=list(range(len(expressions))),
        elements=len(expressions),
        flags=flags,
    )
    serialized = hyperscan.dumpb(database)
    _keep(cached, hashlib.sha256(serialized).digest() + serialized)
    return database


_DIGEST = hashlib.sha256().digest_size


def _cache_file(expressions: list[bytes], flags: list[int]) -> Path:
    folder = user_cache_path("rems-adapter") / "scan"
    key = hashlib.sha256(repr((_VERSION, expressions, flags)).encode()).hexdigest()[:32]
    return folder / f"{key}.hsdb"


def _keep(path: Path, serialized: bytes) -> None:
    """Write the file whole or not at all (another run may be reading or writing it)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(serialized)
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except OSError:
        pass  # a cache folder that cannot be written: compiled again next time


def observation_scanner(codes: bytes, prefix: bytes) -> ObservationScanner | None:
    """The compiled scanner of blocks of `prefix` lines for the `codes` pattern (the
    prefilter's regular expression), or None without Hyperscan."""
    if not AVAILABLE:
        return None
    return _Hyperscan(codes, prefix)
