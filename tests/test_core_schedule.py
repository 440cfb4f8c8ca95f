"""Clinical-rules section 2.2 and the excursion paths of 2.1, over months of history."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.core_kit import START, anc, at, evaluate, issue, supply


def monthly_supplies(until_day: int):
    """28-day supplies from START, never a gap."""
    return [supply(day, 28) for day in range(0, until_day + 1, 28)]


@pytest.mark.parametrize(
    ("collected", "frequency", "due"),
    [
        (date(2025, 7, 5), "weekly", date(2025, 7, 12)),  # 5 months 29 days
        (date(2025, 7, 6), "every-2-weeks", date(2025, 7, 20)),  # 6 calendar months
        (date(2026, 1, 5), "every-2-weeks", date(2026, 1, 19)),
        (date(2026, 1, 6), "every-2-weeks", date(2026, 1, 20)),  # 12 months: "after 12" not yet
        (date(2026, 1, 7), "monthly", date(2026, 2, 7)),  # after 12 calendar months
        (date(2026, 1, 31), "monthly", date(2026, 2, 28)),  # calendar month, clamped
    ],
)
def test_normal_range_steps_down_by_calendar_month(collected, frequency, due):
    days = (collected - START).days
    result = evaluate([anc(-1, 2000), anc(collected, 2100)], monthly_supplies(days))
    assert result.status.therapy_start == START
    assert result.status.frequency == frequency
    assert result.status.next_due == due


def test_hospice_normal_interval_is_six_months():
    result = evaluate([anc(-1, 2000), anc(10, 2100)], [supply(0, 28)], hospice=True)
    assert result.status.frequency == "every-6-months"
    assert result.status.next_due == date(2025, 7, 16)


@pytest.mark.parametrize(
    ("clock_day", "overdue"),
    [(7, False), (9, False), (10, True)],  # due day 7, grace 2 days
)
def test_overdue_after_due_date_plus_grace(clock_day, overdue):
    result = evaluate([anc(-1, 2000), anc(0, 2000)], [supply(0, 28)], clock=clock_day)
    assert result.status.next_due == START + timedelta(days=7)
    assert result.status.overdue is overdue
    assert ("anc-monitoring-overdue" in [f.code for f in result.findings]) is overdue


def test_mild_excursion_returns_straight_to_the_last_normal_interval():
    # 7 months on therapy: every 2 weeks; mild; then normal again.
    base = (date(2025, 8, 10) - START).days
    labs = [anc(-1, 2000), anc(base, 2000), anc(base + 14, 1200), anc(base + 17, 1600)]
    result = evaluate(labs, monthly_supplies(base + 17))
    frequencies = [a.frequency for a in result.timeline.assessments]
    assert frequencies == ["weekly", "every-2-weeks", "three-times-weekly", "every-2-weeks"]
    assert [a.recommendation for a in result.timeline.assessments][-2:] == ["continue", "continue"]


def test_moderate_excursion_full_path():
    base = (date(2025, 8, 10) - START).days  # every-2-weeks phase
    labs = [
        anc(-1, 2000),
        anc(base, 2000),
        anc(base + 14, 800),  # moderate: interrupt, daily
        anc(base + 15, 900),
        anc(base + 16, 1100),  # >= 1000: may resume, three times weekly
        anc(base + 19, 1600),  # >= 1500: weekly for 4 weeks
        anc(base + 26, 1700),
        anc(base + 47, 1800),  # 4 weeks done: back to every 2 weeks
    ]
    supplies = [*monthly_supplies(base), supply(base + 20, 28)]
    result = evaluate(labs, supplies)
    seen = [(a.category, a.recommendation, a.frequency) for a in result.timeline.assessments[2:]]
    assert seen == [
        ("moderate-neutropenia", "interrupt", "daily"),
        ("moderate-neutropenia", "interrupt", "daily"),
        ("mild-neutropenia", "may-resume", "three-times-weekly"),
        ("normal", "may-resume", "weekly"),
        ("normal", "continue", "weekly"),
        ("normal", "continue", "every-2-weeks"),
    ]
    assert all(a.hematology_consult for a in result.timeline.assessments[2:4])


def test_severe_then_rechallenge_needs_prescriber_then_restarts_as_new_patient():
    labs = [anc(-1, 2000), anc(30, 400), anc(31, 800), anc(33, 1200), anc(36, 1600)]
    result = evaluate(labs, monthly_supplies(28))
    seen = [(a.recommendation, a.frequency) for a in result.timeline.assessments[1:]]
    assert seen == [
        ("interrupt", "daily"),
        ("interrupt", "daily"),
        ("interrupt", "three-times-weekly"),
        ("prescriber-decision-required", "weekly"),
    ]
    assert not result.status.hematology_consult  # tied to the current category
    assert [a.hematology_consult for a in result.timeline.assessments[1:3]] == [True, True]
    # A supply handed over before the prescriber decided is no rechallenge: nothing restarts,
    # the rechallenge still waits for the prescriber, and the supply is surfaced.
    supplied = evaluate([*labs, anc(45, 1700)], [*monthly_supplies(28), supply(38, 7)])
    assert supplied.status.therapy_start == START
    assert supplied.status.recommendation == "prescriber-decision-required"
    (surfaced,) = supplied.surfaced
    assert surfaced.dispense.ref == supply(38).ref
    assert surfaced.reasons == ("rechallenge-requires-prescriber",)
    # The prescriber's decision, then the rechallenge supply: a new patient.
    decision = issue(
        "anc-severe-neutropenia", author="Practitioner/dr", when=at(37), evidence=(labs[1].ref,)
    )
    restarted = evaluate(
        [*labs, anc(45, 1700)],
        [*monthly_supplies(28), supply(38, 7)],
        prior=(decision,),
        prescribers=frozenset({"Practitioner/dr"}),
    )
    assert restarted.surfaced == ()
    assert restarted.status.therapy_start == START + timedelta(days=38)
    assert restarted.status.recommendation == "continue"
    assert restarted.status.frequency == "weekly"


@pytest.mark.parametrize(("gap_days", "restarts"), [(29, False), (30, True)])
def test_interruption_of_30_days_or_more_restarts_the_schedule(gap_days, restarts):
    # Therapy for 8 months (every 2 weeks), last supply 28 days, then a gap.
    last = 224  # 8 months in: every 2 weeks; the last 28-day supply ends on day 252
    resume = last + 28 + gap_days
    labs = [anc(-1, 2000), anc(last, 2000), anc(resume - 1, 2000)]
    supplies = [*monthly_supplies(last), supply(resume, 28)]
    result = evaluate(labs, supplies, clock=resume + 1)
    expected_start = START + timedelta(days=resume) if restarts else START
    assert result.status.therapy_start == expected_start
    later = evaluate([*labs, anc(resume + 2, 2000)], supplies, clock=resume + 3)
    assert later.status.frequency == ("weekly" if restarts else "every-2-weeks")


def test_ben_baseline_is_the_median_of_pre_therapy_results():
    labs = [anc(-5, 800), anc(-3, 900), anc(-1, 1300)]
    result = evaluate(labs, [supply(0)], ben=True)
    assert result.timeline.ben_baseline == 900


def test_ben_baseline_defaults_to_1000_without_pre_therapy_results():
    result = evaluate([anc(3, 1300)], [supply(0)], ben=True)
    assert result.timeline.ben_baseline == 1000


def test_ben_neutropenia_recovers_at_own_baseline_then_weekly_for_four_weeks():
    labs = [anc(-3, 800), anc(-1, 850), anc(3, 1100), anc(5, 600), anc(8, 830), anc(36, 1100)]
    result = evaluate(labs, [supply(day, 28) for day in (0, 28)], ben=True)
    seen = [(a.category, a.frequency) for a in result.timeline.assessments[2:]]
    assert seen == [
        ("normal", "weekly"),
        ("ben-neutropenia", "three-times-weekly"),
        ("ben-neutropenia", "weekly"),  # >= baseline 825: weekly for 4 weeks
        ("normal", "weekly"),
    ]


def test_ben_severe_path():
    labs = [anc(-3, 1200), anc(-1, 1200), anc(10, 450), anc(11, 600), anc(14, 1100), anc(17, 1300)]
    result = evaluate(labs, [supply(0, 28)], ben=True)
    seen = [(a.recommendation, a.frequency) for a in result.timeline.assessments[2:]]
    assert seen == [
        ("interrupt", "daily"),
        ("interrupt", "three-times-weekly"),
        ("prescriber-decision-required", "three-times-weekly"),  # >= 1000, below baseline 1200
        ("prescriber-decision-required", "weekly"),
    ]


def test_time_of_an_anc_is_collection_in_the_site_time_zone():
    from zoneinfo import ZoneInfo

    from adapter.core.evaluate import Context, evaluate_patient
    from adapter.core.model import PatientInputs
    from tests.core_kit import PATIENT, reference

    late = anc(0, 2000, hour=23)  # 23:00 UTC on START is the next day in Tokyo
    data = reference()
    inputs = PatientInputs(PATIENT, labs=(late,))
    for zone, due in (
        ("UTC", START + timedelta(days=7)),
        ("Asia/Tokyo", START + timedelta(days=8)),
    ):
        context = Context(data.protocol, data.units, ZoneInfo(zone), at(1))
        assert evaluate_patient(inputs, context).status.next_due == due
