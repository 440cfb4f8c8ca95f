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
"""

from __future__ import annotations

from typing import Any, Protocol

try:
    import hyperscan

    AVAILABLE = True
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
        self.database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.database.compile(
            expressions=expressions,
            ids=[_CODE, _ELSEWHERE],
            elements=len(expressions),
            flags=[0, hyperscan.HS_FLAG_SINGLEMATCH],
        )
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


def observation_scanner(codes: bytes, prefix: bytes) -> ObservationScanner | None:
    """The compiled scanner of blocks of `prefix` lines for the `codes` pattern (the
    prefilter's regular expression), or None without Hyperscan."""
    if not AVAILABLE:
        return None
    return _Hyperscan(codes, prefix)
