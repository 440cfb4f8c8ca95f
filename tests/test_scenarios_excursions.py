"""Excursions over months of history: mild, moderate, severe, BEN, the BEN baseline, and the
return to the last normal-range interval (clinical-rules 2.1, 2.2).

Each scenario is a history of ANCs; step i evaluates the first i+1 results as of the evening of
the i-th collection, so every step of the path is checked, not only the end state.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    from tests import scenario_kit as k
except ImportError:
    import scenario_kit as k

ANY = object()  # the spec leaves this field open at this step (SCENARIOS.md)


@dataclass(frozen=True)
class Step:
    collected: str
    value: int
    category: str
    recommendation: object
    frequency: object
    due: object
    repeat: bool = False
    consult: object = ANY


@dataclass(frozen=True)
class Scenario:
    name: str
    start: str
    population: str
    steps: tuple[Step, ...]
    pre_therapy: tuple[tuple[str, int], ...] = (("BASELINE", 2000),)
    hospice: bool = False


CONT, INT, RESUME, PDR = "continue", "interrupt", "may-resume", "prescriber-decision-required"
MILD, MOD, SEV, BENN = (
    "mild-neutropenia",
    "moderate-neutropenia",
    "severe-neutropenia",
    "ben-neutropenia",
)

SCENARIOS = [
    # Month 8 (every 2 weeks): mild -> three times weekly until >= 1500 -> back to every 2 weeks.
    Scenario(
        "mild-every-2-weeks",
        "2025-06-02",
        "general",
        (
            Step("2026-02-06", 1600, "normal", CONT, "every-2-weeks", "2026-02-20", consult=False),
            Step("2026-02-16", 1200, MILD, CONT, "three-times-weekly", "2026-02-19", True, False),
            Step("2026-02-18", 1499, MILD, CONT, "three-times-weekly", "2026-02-21"),
            Step("2026-02-21", 1500, "normal", CONT, "every-2-weeks", "2026-03-07", consult=False),
        ),
    ),
    # Mild starting at 5 months 27 days, returning after 6 months: "the last normal-range
    # interval ... as the schedule stands when the patient returns" -> every 2 weeks.
    Scenario(
        "mild-across-6-months",
        "2025-08-10",
        "general",
        (
            Step("2026-02-02", 1600, "normal", CONT, "weekly", "2026-02-09"),
            Step("2026-02-06", 1200, MILD, CONT, "three-times-weekly", "2026-02-09", True),
            Step("2026-02-09", 1300, MILD, CONT, "three-times-weekly", "2026-02-12"),
            Step("2026-02-12", 1700, "normal", CONT, "every-2-weeks", "2026-02-26"),
        ),
    ),
    # Month 15 (monthly): moderate -> interrupt, daily until >= 1000, three times weekly until
    # >= 1500, weekly for 4 weeks, then monthly again.
    Scenario(
        "moderate-monthly",
        "2024-11-04",
        "general",
        (
            Step("2026-02-02", 1800, "normal", CONT, "monthly", "2026-03-02", consult=False),
            Step("2026-02-10", 800, MOD, INT, "daily", "2026-02-11", True, True),
            Step("2026-02-11", 999, MOD, INT, "daily", "2026-02-12", consult=True),
            Step("2026-02-12", 1000, MILD, RESUME, "three-times-weekly", "2026-02-15"),
            Step("2026-02-15", 1499, MILD, RESUME, "three-times-weekly", "2026-02-18"),
            Step("2026-02-18", 1500, "normal", ANY, "weekly", "2026-02-25"),
            Step("2026-02-25", 1700, "normal", ANY, "weekly", "2026-03-04"),
            Step("2026-03-04", 1700, "normal", ANY, "weekly", "2026-03-11"),
            Step("2026-03-11", 1700, "normal", ANY, "weekly", "2026-03-18"),
            Step("2026-03-20", 1700, "normal", CONT, "monthly", "2026-04-20"),  # 30 days after 1500
        ),
    ),
    # Month 1 (weekly): severe -> interrupt, daily until >= 1000, three times weekly until
    # >= 1500, then a rechallenge needs the prescriber.
    Scenario(
        "severe-general",
        "2026-01-05",
        "general",
        (
            Step("2026-02-02", 1700, "normal", CONT, "weekly", "2026-02-09"),
            Step("2026-02-09", 400, SEV, INT, "daily", "2026-02-10", True, True),
            Step("2026-02-10", 700, MOD, INT, "daily", "2026-02-11"),
            Step("2026-02-11", 1000, MILD, INT, "three-times-weekly", "2026-02-14"),
            Step("2026-02-14", 1499, MILD, INT, "three-times-weekly", "2026-02-17"),
            Step("2026-02-17", 1500, "normal", PDR, ANY, ANY),
        ),
    ),
    # BEN, month 8, no pre-therapy ANC (baseline 1000): ben-neutropenia -> three times weekly
    # until >= 1000, weekly for 4 weeks, then every 2 weeks again.
    Scenario(
        "ben-neutropenia",
        "2025-06-02",
        "ben",
        (
            Step("2026-02-06", 1200, "normal", CONT, "every-2-weeks", "2026-02-20", consult=False),
            Step("2026-02-16", 700, BENN, CONT, "three-times-weekly", "2026-02-19", True, True),
            Step("2026-02-19", 999, BENN, CONT, "three-times-weekly", "2026-02-22", consult=True),
            Step("2026-02-22", 1000, "normal", CONT, "weekly", "2026-03-01"),
            Step("2026-03-01", 1100, "normal", CONT, "weekly", "2026-03-08"),
            Step("2026-03-08", 1100, "normal", CONT, "weekly", "2026-03-15"),
            Step("2026-03-15", 1100, "normal", CONT, "weekly", "2026-03-22"),
            Step("2026-03-24", 1100, "normal", CONT, "every-2-weeks", "2026-04-07"),
        ),
        pre_therapy=(),
    ),
    # BEN severe, baseline 1000 (none before therapy): daily until >= 500, three times weekly
    # until >= the baseline, then a rechallenge needs the prescriber.
    Scenario(
        "ben-severe",
        "2025-06-02",
        "ben",
        (
            Step("2026-02-06", 1200, "normal", CONT, "every-2-weeks", "2026-02-20"),
            Step("2026-02-16", 450, SEV, INT, "daily", "2026-02-17", True, True),
            Step("2026-02-17", 499, SEV, INT, "daily", "2026-02-18"),
            Step("2026-02-18", 500, BENN, INT, "three-times-weekly", "2026-02-21"),
            Step("2026-02-21", 999, BENN, INT, "three-times-weekly", "2026-02-24"),
            Step("2026-02-24", 1000, "normal", PDR, ANY, ANY),
        ),
        pre_therapy=(),
    ),
    # BEN baseline = median of the pre-therapy ANCs: 500, 700, 800, 1050, 1100 -> 800 (the mean
    # would be 830). Three times weekly ends at >= 800 (SCENARIOS.md, ambiguity A4).
    Scenario(
        "ben-baseline-median-800",
        "2025-06-02",
        "ben",
        (
            Step("2026-02-06", 1200, "normal", CONT, "every-2-weeks", "2026-02-20"),
            Step("2026-02-16", 600, BENN, CONT, "three-times-weekly", "2026-02-19", True),
            Step("2026-02-19", 790, BENN, CONT, "three-times-weekly", "2026-02-22"),
            Step("2026-02-22", 810, BENN, CONT, "weekly", "2026-03-01"),
        ),
        pre_therapy=(
            ("2025-05-01", 500),
            ("2025-05-10", 700),
            ("2025-05-20", 800),
            ("2025-05-28", 1050),
            ("2025-05-30", 1100),
        ),
    ),
]

SCENARIOS += [
    # Month 8: mild, then moderate on the way down, then the moderate recovery path; the weekly
    # 4 weeks end and every 2 weeks resumes.
    Scenario(
        "mild-then-moderate",
        "2025-06-02",
        "general",
        (
            Step("2026-02-06", 1600, "normal", CONT, "every-2-weeks", "2026-02-20"),
            Step("2026-02-16", 1200, MILD, CONT, "three-times-weekly", "2026-02-19", True),
            Step("2026-02-19", 900, MOD, INT, "daily", "2026-02-20", consult=True),
            Step("2026-02-20", 1100, MILD, RESUME, "three-times-weekly", "2026-02-23"),
            Step("2026-02-23", 1600, "normal", ANY, "weekly", "2026-03-02"),
            Step("2026-03-02", 1600, "normal", ANY, "weekly", "2026-03-09"),
            Step("2026-03-26", 1600, "normal", CONT, "every-2-weeks", "2026-04-09"),
        ),
    ),
    # Month 15: moderate, may-resume, falls back to moderate (daily again, no new 24-hour repeat
    # because it does not follow a normal result), then recovers.
    Scenario(
        "moderate-bounce",
        "2024-11-04",
        "general",
        (
            Step("2026-02-02", 1800, "normal", CONT, "monthly", "2026-03-02"),
            Step("2026-02-10", 800, MOD, INT, "daily", "2026-02-11", True, True),
            Step("2026-02-11", 1100, MILD, RESUME, "three-times-weekly", "2026-02-14"),
            Step("2026-02-14", 900, MOD, INT, "daily", "2026-02-15", consult=True),
            Step("2026-02-15", 1200, MILD, RESUME, "three-times-weekly", "2026-02-18"),
            Step("2026-02-18", 1600, "normal", ANY, "weekly", "2026-02-25"),
        ),
    ),
    # Hospice (every 6 months): mild -> three times weekly -> back to every 6 months.
    Scenario(
        "hospice-mild",
        "2025-06-02",
        "general",
        (
            Step("2026-02-06", 1600, "normal", CONT, "every-6-months", "2026-08-06"),
            Step("2026-02-16", 1200, MILD, CONT, "three-times-weekly", "2026-02-19", True),
            Step("2026-02-19", 1500, "normal", CONT, "every-6-months", "2026-08-19"),
        ),
        hospice=True,
    ),
    # BEN severe with a median baseline of 800: daily until >= 500, three times weekly until >=
    # the baseline, a rechallenge "once >= 1000 or at baseline" (SCENARIOS.md A4).
    Scenario(
        "ben-severe-baseline-800",
        "2025-06-02",
        "ben",
        (
            Step("2026-02-06", 1200, "normal", CONT, "every-2-weeks", "2026-02-20"),
            Step("2026-02-16", 400, SEV, INT, "daily", "2026-02-17", True, True),
            Step("2026-02-17", 600, BENN, INT, "three-times-weekly", "2026-02-20"),
            Step("2026-02-20", 790, BENN, INT, "three-times-weekly", "2026-02-23"),
            Step("2026-02-23", 810, BENN, PDR, ANY, ANY),
        ),
        pre_therapy=(
            ("2025-05-01", 500),
            ("2025-05-10", 700),
            ("2025-05-20", 800),
            ("2025-05-28", 1050),
            ("2025-05-30", 1100),
        ),
    ),
]

CASES = [(s, i) for s in SCENARIOS for i in range(len(s.steps))]


def history(scenario: Scenario, upto: int, pid: str) -> list[k.Resource]:
    """Resources for a scenario up to and including step `upto`."""
    last = scenario.steps[upto].collected
    designations = ((k.BEN,) if scenario.population == "ben" else ()) + (
        (k.HOSPICE,) if scenario.hospice else ()
    )
    res = k.on_clozapine(pid, scenario.start, last, baseline=None, designations=designations)
    for collected, value in scenario.pre_therapy:
        when = k.add_days(scenario.start, -2) if collected == "BASELINE" else collected
        res.append(k.anc(pid, when, value))
    res += [k.anc(pid, s.collected, s.value) for s in scenario.steps[: upto + 1]]
    return res


@pytest.mark.parametrize(
    ("scenario", "step"),
    CASES,
    ids=[f"{s.name}-{i}-{s.steps[i].collected}-{s.steps[i].value}" for s, i in CASES],
)
def test_excursion_step(tmp_path: Path, scenario: Scenario, step: int) -> None:
    pid = f"p-{scenario.name}"
    expected = scenario.steps[step]
    result = k.run_batch(tmp_path, history(scenario, step, pid), k.as_of(expected.collected))
    status = result.status_for(pid)
    assert status["population"] == scenario.population
    assert status["latestAnc"]["valuePerUL"] == pytest.approx(expected.value)
    assert status["category"] == expected.category
    if expected.recommendation is not ANY:
        assert status["recommendation"] == expected.recommendation
    else:  # at least: no longer blocked and not awaiting the prescriber
        assert status["recommendation"] in ("continue", "may-resume")
    if expected.frequency is not ANY:
        assert status["monitoringFrequency"] == expected.frequency
    if expected.due is not ANY:
        assert status["nextAncDue"] == expected.due
    if expected.consult is not ANY:
        assert status["hematologyConsult"] is expected.consult
    if expected.repeat:
        assert status["repeatAncBy"] is not None
        assert k.parse_instant(status["repeatAncBy"]) == k.parse_instant(
            k.when(k.add_days(expected.collected, 1))
        )
    else:
        assert status["repeatAncBy"] is None
    assert status["overdue"] is False

    # Every usable non-normal ANC of the history has its own finding, not only the latest.
    # That includes the pre-therapy ANCs (interfaces 3: "every usable non-normal ANC").
    values = [v for _, v in scenario.pre_therapy] + [s.value for s in scenario.steps[: step + 1]]
    expected_findings = [
        FINDING[c] for v in values if (c := category_of(v, scenario.population)) != "normal"
    ]
    assert result.anc_findings(pid) == sorted(expected_findings)


FINDING = {
    MILD: "anc-mild-neutropenia",
    MOD: "anc-moderate-neutropenia",
    SEV: "anc-severe-neutropenia",
    BENN: "anc-ben-neutropenia",
}


def category_of(value: int, population: str) -> str:
    if population == "ben":
        return "normal" if value >= 1000 else BENN if value >= 500 else SEV
    return "normal" if value >= 1500 else MILD if value >= 1000 else MOD if value >= 500 else SEV


# ---- Rechallenge after severe: prescriber decision ---------------------------------------------
SEVERE = SCENARIOS[3]
RECHALLENGE_DAY = "2026-02-18"


def _severe_then_pending(pid: str) -> list[k.Resource]:
    return [
        *history(SEVERE, len(SEVERE.steps) - 1, pid),
        k.pending_dispense(pid, RECHALLENGE_DAY, 7, did=f"{pid}-rechallenge"),
    ]


def test_rechallenge_needs_the_prescriber(tmp_path: Path) -> None:
    pid = "p-rechallenge"
    result = k.run_batch(tmp_path, _severe_then_pending(pid), k.as_of(RECHALLENGE_DAY))
    assert result.status_for(pid)["recommendation"] == PDR
    auth = result.authorization_for(f"{pid}-rechallenge")
    assert auth["outcome"] == "not-authorized"
    assert auth["reasons"] == ["rechallenge-requires-prescriber"]
    issue = result.dispense_issue(f"{pid}-rechallenge")
    assert k.finding_code(issue) == "dispense-not-authorized"
    assert k.evidence_codes(issue) == {"rechallenge-requires-prescriber"}


@pytest.mark.parametrize(
    ("author", "outcome"),
    [(k.PRESCRIBER, "authorized-override"), ("someone-else", "not-authorized")],
    ids=["by-the-prescriber", "by-another-practitioner"],
)
def test_prescriber_rationale_on_severe_issue_allows_rechallenge(
    tmp_path: Path, author: str, outcome: str
) -> None:
    pid = "p-rechallenge-rationale"
    resources = _severe_then_pending(pid)
    first = k.run_batch(tmp_path, resources, k.as_of(RECHALLENGE_DAY))
    severe_obs = f"{pid}-anc-2026-02-09"
    (severe,) = first.issues_where(code="anc-severe-neutropenia", observation=severe_obs)
    answered = k.prescriber_rationale(severe, "2026-02-17", prescriber=author)
    answered.setdefault("id", "di-severe-answered")
    others = [i for i in first.issues if i is not severe]

    second = k.run_batch(tmp_path, [*resources, *others, answered], k.as_of(RECHALLENGE_DAY))
    auth = second.authorization_for(f"{pid}-rechallenge")
    assert auth["outcome"] == outcome
    issue = second.dispense_issue(f"{pid}-rechallenge")
    if outcome == "authorized-override":
        assert k.finding_code(issue) == "dispense-authorized-override"
        assert issue["severity"] == "low"
        assert k.cites_rationale(issue, answered)
    else:
        assert k.finding_code(issue) == "dispense-not-authorized"
        assert auth["reasons"] == ["rechallenge-requires-prescriber"]
