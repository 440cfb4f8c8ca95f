"""The fuzz test in the suite, on a bounded budget: mutated demo data and FHIR-shaped JSON through
batch mode, in process. No exception escapes, the exit code is 0 (bad input is reported), no
case is a hang (over 10 s), and every patient the damage did not touch keeps its decisions.

The long run is ``python -m tests.fuzz.run --cases 100000`` (figures in BENCHMARKS.md)."""

from __future__ import annotations

import json
import random
import tempfile
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import corpus as corpus_module
from tests.fuzz.run import Figures, fuzz, run_case
from tests.fuzz.shapes import anything

CI_CASES = 400
CI_BUDGET_SECONDS = 20.0


@cache
def _corpus() -> corpus_module.Corpus:
    return corpus_module.load()


def test_mutated_demo_data_never_crashes_hangs_or_loses_a_good_patient() -> None:
    figures = fuzz(CI_CASES, seed=20261202, budget_seconds=CI_BUDGET_SECONDS, corpus=_corpus())
    assert figures.cases >= 50  # the budget ran real cases
    assert figures.ok(), figures.report()


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(anything, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_fhir_shaped_json_never_crashes_or_touches_good_patients(
    extra: list[object], rng: random.Random
) -> None:
    corpus = _corpus()
    chosen = set(rng.sample(sorted(corpus.by_patient), 2))
    numbers = list(corpus.shared) + [n for p in sorted(chosen) for n in corpus.by_patient[p]]
    lines = [corpus.lines[n] for n in numbers]
    added = [json.dumps(item).encode() for item in extra]
    for line in added:
        lines.insert(rng.randrange(len(lines) + 1), line)
    # Generated resources use their own patients and "fz-" ids; anything they name is touched.
    touched = corpus.affected(*added)
    figures = Figures()
    with tempfile.TemporaryDirectory() as folder:
        run_case(corpus, b"\n".join(lines), chosen, touched, Path(folder), figures, 10.0)
    assert figures.ok(), figures.report()
