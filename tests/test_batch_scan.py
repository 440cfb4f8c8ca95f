"""The compiled block scanner (adapter/batch/scan.py) decides every block of NDJSON lines as
the standard library's counts and regular expression do, and both as reading the block line by
line with `Prefilter.skips` does: the same lines parsed, the same line numbers."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.batch import scan, sources
from adapter.batch.engine import prefilter_for
from adapter.batch.sources import Prefilter
from adapter.mappings_loader import load_reference_data

pytestmark = pytest.mark.skipif(not scan.AVAILABLE, reason="hyperscan is not installed")

OBS = b'{"resourceType":"Observation",'
ANC = OBS + b'"id":"a","code":{"coding":[{"system":"http://loinc.org","code":"751-8"}]}}'
WBC = OBS + b'"id":"w","code":{"coding":[{"code" : "6690-2"}]},"status":"final"}'
OTHER = OBS + b'"id":"o","code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]}}'
#: Lines that make a block of Observations not uniform, or are read whatever the block.
ODD = [
    b"",  # a blank line
    b" " + OTHER,  # not the compact form
    OBS + b'"contained":[{"resourceType":"Specimen"}]}',
    OBS + b'"resourceType":"Flag"}',  # a repeated key
    OBS + b'"code":{"coding":[{"code":"751\\u002d8"}]}}',  # an escape hiding a code
    OBS + b'"note":[{"text":"a \\"quoted\\" word"}]}',
    b'{"resourceType":"Encounter","id":"e"}',
    b'{"resourceType":"Observation"',  # cut short, no comma
    b'{"resourceType":"Observatio',
    b"\xef\xbb\xbf" + OTHER,  # a byte order mark
    b'{"id":"x","resourceType":"Observation"}',
    b"[1, 2]",
    OBS + b'"valueString":"{\\"resourceType\\":1}"}',
]


@cache
def _filters() -> tuple[Prefilter, Prefilter]:
    fast = prefilter_for(load_reference_data())
    assert fast.scanner is not None
    return fast, Prefilter(fast.read_types, fast.codes)  # the second: no scanner


def _by_lines(block: bytes, prefilter: Prefilter) -> tuple[list[int], list[int], int]:
    """What reading the block line by line would parse: (start offsets, line numbers, lines)."""
    starts, numbers, at, number = [], [], 0, 0
    while at < len(block):
        stop = block.find(b"\n", at)
        stop = len(block) if stop < 0 else stop + 1
        number += 1
        if not prefilter.skips(block[at:stop]):
            starts.append(at)
            numbers.append(number)
        at = stop
    return starts, numbers, number


def _check(block: bytes) -> None:
    fast, plain = _filters()
    decided = sources._coded_observations(block, fast)
    assert decided == sources._coded_observations(block, plain)
    if decided is not None:  # decided for the whole block: what each line would say
        assert decided == _by_lines(block, plain)


@pytest.mark.parametrize(
    "lines",
    [
        [ANC],
        [OTHER],
        [OTHER, ANC, OTHER, WBC, OTHER],
        [ANC, ANC, ANC],
        [OTHER] * 50 + [ANC],
        *([OTHER, odd, ANC] for odd in ODD),
        *([odd, OTHER, ANC] for odd in ODD),
        *([OTHER, ANC, odd] for odd in ODD),
    ],
)
@pytest.mark.parametrize("newline_at_end", [True, False])
def test_a_block_is_decided_the_same_every_way(lines: list[bytes], newline_at_end: bool) -> None:
    block = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    _check(block)


def test_a_uniform_block_parses_only_the_coded_lines_with_their_numbers() -> None:
    block = b"\n".join([OTHER, ANC, OTHER, OTHER, WBC]) + b"\n"
    decided = sources._coded_observations(block, _filters()[0])
    assert decided is not None
    starts, numbers, lines = decided
    assert numbers == [2, 5]
    assert lines == 5
    assert [block[at : at + len(ANC)] for at in starts[:1]] == [ANC]


@pytest.mark.parametrize("odd", ODD)
def test_any_odd_line_sends_the_block_to_the_general_path(odd: bytes) -> None:
    block = b"\n".join([OTHER, odd, ANC]) + b"\n"
    assert sources._coded_observations(block, _filters()[0]) is None


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([ANC, WBC, OTHER, OTHER, OTHER, *ODD]), min_size=1, max_size=12),
    st.booleans(),
    st.integers(min_value=0, max_value=400),
    st.binary(max_size=3),
)
def test_any_block_is_decided_the_same_every_way(
    lines: list[bytes], newline_at_end: bool, where: int, noise: bytes
) -> None:
    block = b"\n".join(lines) + (b"\n" if newline_at_end else b"")
    at = where % (len(block) + 1)
    _check(block)
    _check(block[:at] + noise + block[at:])  # and with a few bytes anywhere


# ------------------------------------------------------------------ the compiled database's cache

_BLOCK = b"\n".join([ANC, OTHER, WBC, OTHER, ANC]) + b"\n"
_WBC_AT = len(ANC) + 1 + len(OTHER) + 1
_CODED = [0, _WBC_AT, _WBC_AT + len(WBC) + 1 + len(OTHER) + 1]  # where the coded lines start


def _scanner() -> scan.ObservationScanner:
    scanner = scan.observation_scanner(_filters()[0].codes.pattern, OBS)
    assert scanner is not None
    return scanner


def _cached(cache: Path) -> list[Path]:
    return sorted((cache / "rems-adapter" / "scan").glob("*.hsdb"))


def test_the_compiled_database_is_kept_and_loaded_by_the_next_scanner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _scanner().code_line_starts(_BLOCK) == _CODED
    assert len(_cached(tmp_path)) == 1

    def no_compiling(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("compiled again although cached")

    monkeypatch.setattr(scan.hyperscan, "Database", no_compiling)
    assert _scanner().code_line_starts(_BLOCK) == _CODED


@pytest.mark.parametrize("damage", ["flip", "truncate", "empty"])
def test_a_damaged_cached_database_is_compiled_again_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    _scanner()
    (kept,) = _cached(tmp_path)
    good = kept.read_bytes()
    if damage == "flip":  # one bit: Hyperscan's own checks may let it through
        middle = len(good) // 2
        kept.write_bytes(good[:middle] + bytes([good[middle] ^ 0x01]) + good[middle + 1 :])
    elif damage == "truncate":
        kept.write_bytes(good[: len(good) // 3])
    else:
        kept.write_bytes(b"")
    assert _scanner().code_line_starts(_BLOCK) == _CODED
    assert kept.read_bytes() == good  # replaced by a sound one


def test_a_cache_folder_that_cannot_be_written_is_done_without(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    assert _scanner().code_line_starts(_BLOCK) == _CODED
    assert _scanner().code_line_starts(_BLOCK) == _CODED  # compiled again, still right
