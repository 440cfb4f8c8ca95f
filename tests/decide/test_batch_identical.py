"""Batch mode is byte-identical after the backends moved to adapter/decide: the outputs of both
backends on the demo data equal those recorded before the move (tests/decide/golden)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.decide.golden import FILES, GOLDEN, outputs, produce, reference_rems


def _assert_same(out: Path, backend: str) -> None:
    produced = outputs(out)
    for name in FILES:
        expected = (GOLDEN / backend / name).read_bytes()
        assert expected, f"{backend}/{name} recorded empty"
        assert produced[name] == expected, f"{backend}/{name} differs from the recorded output"


def test_local_backend_outputs_are_byte_identical(tmp_path: Path):
    produce(tmp_path / "out", "local")
    _assert_same(tmp_path / "out", "local")


@pytest.mark.integration
def test_rems_backend_outputs_are_byte_identical(tmp_path: Path):
    with reference_rems(tmp_path) as url:
        produce(tmp_path / "out", url)
    _assert_same(tmp_path / "out", "rems")
