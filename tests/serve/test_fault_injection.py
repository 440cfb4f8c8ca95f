"""SIGKILL serve at random while results stream in: every DetectedIssue exactly once, none lost
(the smaller in-suite run of `python -m tests.serve.fault_run`, whose full 1,000-result,
20-kill figures are in BENCHMARKS.md)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.serve.fault_run import run

pytestmark = pytest.mark.integration


def test_results_survive_random_sigkills_exactly_once(tmp_path: Path):
    report = run(results=40, kills=4, patients=8, rng=random.Random(7), workdir=tmp_path)
    assert report.ok, report.summary()
    assert report.kills == 4 and report.starts == 5
    assert report.issues_found == report.expected_issues == 40
    assert report.duplicates == 0 and report.missing == 0
