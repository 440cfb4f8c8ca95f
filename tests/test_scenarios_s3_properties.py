"""S3 property: feeding a run's DetectedIssues back is a fixpoint (IF 2 "a replay never
duplicates", "withdrawn decisions are updated ..., never deleted"; IF 3 "the same inputs and
--as-of give byte-identical files"). For any short ANC history of a long-term patient with a
pending dispense, where some results are later entered in error, cancelled or corrected:

  out1 = run(history)                     the first decisions
  out2 = run(changed + out1)              withdrawals and re-made decisions
  out3 = run(changed + out2)              a replay of the previous output

out3 is byte-identical to out2, every identifier of out1 is still in out2 (nothing deleted), and
no identifier appears twice in any output."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.scenario_kit import anc, as_of, pending_dispense, run_batch
from tests.scenario_kit_s2 import long_term, version
from tests.scenario_kit_s3 import ident

DAYS = ["2026-02-05", "2026-02-08", "2026-02-10"]
VALUES = st.sampled_from([300, 499, 500, 800, 999, 1000, 1400, 1499, 1500, 1800])
CHANGES = st.sampled_from(["keep", "entered-in-error", "cancelled", "corrected"])
_runs = itertools.count()


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    values=st.lists(VALUES, min_size=1, max_size=3),
    changes=st.lists(CHANGES, min_size=3, max_size=3),
    corrected=VALUES,
)
def test_s3_replay_is_a_fixpoint(
    tmp_path: Path, values: list[int], changes: list[str], corrected: int
) -> None:
    work = tmp_path / f"ex{next(_runs)}"
    results = [
        anc("p", d, v, oid=f"p-r{n}") for n, (d, v) in enumerate(zip(DAYS, values, strict=False))
    ]
    base = [*long_term("p"), pending_dispense("p", "2026-02-11", did="p-pend")]
    clock = as_of("2026-02-11")
    out1 = run_batch(work, [*base, *results], clock)
    changed = []
    for obs, change in zip(results, changes, strict=False):
        if change == "keep":
            changed.append(obs)
        elif change == "corrected":
            changed.append(
                version(obs, "2", status="corrected", value=corrected, updated="2026-02-11")
            )
        else:
            changed.append(version(obs, "2", status=change, updated="2026-02-11"))
    out2 = run_batch(work, [*base, *changed, *out1.issues], clock)
    out3 = run_batch(work, [*base, *changed, *out2.issues], clock)
    assert out3.raw == out2.raw
    for out in (out1, out2, out3):
        idents = [ident(i) for i in out.issues]
        assert len(idents) == len(set(idents)), idents
    assert {ident(i) for i in out1.issues} <= {ident(i) for i in out2.issues}
