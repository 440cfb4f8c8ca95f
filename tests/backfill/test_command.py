"""The backfill command's own pieces: SIGTERM stops it like Ctrl-C; the working folder."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from adapter.backfill.command import _sigterm_interrupts, _working_folder


def test_sigterm_interrupts_like_ctrl_c_and_the_handler_is_restored() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), _sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        signal.sigtimedwait([], 5)  # pragma: no cover - the handler raises first
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_kept_working_folder_holds_only_this_export_for_batch_mode(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "export").mkdir(parents=True)
    (work / "export" / "0001-Observation.ndjson").write_text("{}\n")
    (work / "manifest.json").write_text("{}")
    (work / "notes.txt").write_text("mine")
    (work / "export" / "mine.ndjson").write_text("{}\n")

    folder, cleanup = _working_folder(work)
    cleanup()

    assert folder == work
    # export/ and errors/ are the command's (batch mode reads export/ whole); the rest is kept
    assert sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file()) == [
        "notes.txt"
    ]


def test_a_temporary_working_folder_is_removed(tmp_path: Path) -> None:
    folder, cleanup = _working_folder(None)
    (folder / "x.ndjson").write_text("{}\n")
    cleanup()
    assert not folder.exists()
