"""Watermarks, the overlap window and keyset paging, against an in-memory FHIR search."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from adapter.mappings_loader import load_reference_data
from adapter.watch.config import EvaluationSettings, WatchSettings
from adapter.watch.queries import format_instant, later, poll_from
from adapter.watch.state import StateStore, is_newer
from adapter.watch.watcher import Watcher
from adapter.watch.writeback import CONDITIONAL, EhrFeatures

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def test_poll_from_subtracts_the_overlap_and_keeps_raw_strings_without_one() -> None:
    assert poll_from(None, 120) is None
    assert poll_from("2026-01-05T08:00:00.123Z", 0) == "2026-01-05T08:00:00.123Z"
    assert poll_from("2026-01-05T08:00:00.123+00:00", 0) == "2026-01-05T08:00:00.123+00:00"
    assert poll_from("2026-01-05T08:00:00.123Z", 120) == "2026-01-05T07:58:00.123Z"
    assert poll_from("2026-01-05T09:00:00.5+01:00", 1) == "2026-01-05T07:59:59.500Z"
    assert poll_from("not-an-instant", 120) == "not-an-instant"  # sent back as the server said


def test_later_compares_instants_not_strings() -> None:
    assert later("2026-01-05T08:00:00.001Z", "2026-01-05T08:00:00Z")
    assert not later("2026-01-05T09:00:00+01:00", "2026-01-05T08:00:00Z")  # the same instant
    assert later("2026-01-05T08:00:00Z", None)
    assert format_instant(T0 + timedelta(microseconds=7999)) == "2026-01-05T08:00:00.007Z"


def test_versions_order_by_version_id_then_last_updated() -> None:
    assert is_newer(("10", "2026-01-01T00:00:00Z"), ("9", "2026-01-02T00:00:00Z"))
    assert not is_newer(("2", "x"), ("2", "y"))
    assert is_newer(("", "2026-01-02T00:00:00Z"), ("", "2026-01-01T00:00:00Z"))
    assert not is_newer(("", "2026-01-01T00:00:00Z"), ("", "2026-01-01T00:00:00Z"))
    # a versionId that is no count (5,000 digits, a Unicode digit) is opaque: never an error
    huge = "9" * 5000
    assert is_newer((huge, "2026-01-02T00:00:00Z"), ("3", "2026-01-01T00:00:00Z"))
    assert not is_newer((huge, "2026-01-01T00:00:00Z"), (huge, "2026-01-01T00:00:00Z"))
    assert is_newer(("\u00b2", "2026-01-02T00:00:00Z"), ("1", "2026-01-01T00:00:00Z"))


class FakeFhir:
    """A FHIR search over a list, like sekmet: sorted by lastUpdated, offset `next` links."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self.resources = resources
        self.searches: list[dict[str, str]] = []
        self.pages = 0
        self.base_url = "http://127.0.0.1:1/fhir"  # what the state binds to

    def search_pages(
        self,
        resource_type: str,
        params: Sequence[tuple[str, str]],
        *,
        include: Sequence[str] = (),
        count: int | None = None,
        max_pages: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        query = dict(params)
        self.searches.append({"type": resource_type, **query})
        since = query.get("_lastUpdated", "ge")[2:]
        found = sorted(
            (
                r
                for r in self.resources
                if r["resourceType"] == resource_type
                and (not since or not later(since, r["meta"]["lastUpdated"]))
            ),
            key=lambda r: r["meta"]["lastUpdated"],
        )
        size = count or 20
        for offset in range(0, max(len(found), 1), size):
            self.pages += 1
            more = offset + size < len(found)
            yield {
                "resourceType": "Bundle",
                "entry": [{"resource": r} for r in found[offset : offset + size]],
                "link": [{"relation": "next", "url": "http://x/next"}] if more else [],
            }

    def batch(self, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        raise AssertionError("normal results only: nothing to write")


def anc(n: int, at: datetime, version: int = 1) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"o{n}",
        "meta": {"versionId": str(version), "lastUpdated": format_instant(at)},
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "751-8"}]},
        "subject": {"reference": f"Patient/p{n % 3}"},
        "effectiveDateTime": "2026-01-05T07:00:00Z",
        "valueQuantity": {"value": 2500, "unit": "/uL"},
    }


def watcher(fake: FakeFhir, state: Path, **settings: Any) -> Watcher:
    return Watcher(
        fake,  # type: ignore[arg-type]
        StateStore(state),
        load_reference_data(),
        WatchSettings(state=state, **settings),
        EvaluationSettings(as_of=T0 + timedelta(days=1)),
        features=EhrFeatures(CONDITIONAL, True),
        author="Device/rems-adapter",
    )


def observation_searches(fake: FakeFhir) -> list[str | None]:
    return [s.get("_lastUpdated") for s in fake.searches if s["type"] == "Observation"]


def test_pages_by_keyset_and_advances_the_watermark(tmp_path: Path) -> None:
    fake = FakeFhir([anc(n, T0 + timedelta(seconds=n)) for n in range(7)])
    watch = watcher(fake, tmp_path / "s.sqlite", page_size=3, overlap_seconds=0)

    report = watch.cycle()

    assert report.new_versions == 7 and report.duplicates == 2  # the boundary ones, once each
    assert observation_searches(fake) == [
        None,
        f"ge{format_instant(T0 + timedelta(seconds=2))}",
        f"ge{format_instant(T0 + timedelta(seconds=4))}",
    ]
    assert watch.store.watermark("observation") == format_instant(T0 + timedelta(seconds=6))
    assert watch.store.dirty() == []  # decided in the same cycle
    assert report.patients_decided == 3
    assert watch.store.count("Observation") == 7


def test_a_page_stuck_on_one_instant_follows_the_next_link(tmp_path: Path) -> None:
    # a transaction commits many resources in the same millisecond: ge<that instant> would
    # return the same first page for ever; the offset link gets past it
    fake = FakeFhir([anc(n, T0) for n in range(5)] + [anc(9, T0 + timedelta(seconds=1))])
    watch = watcher(fake, tmp_path / "s.sqlite", page_size=2, overlap_seconds=0)

    report = watch.cycle()

    assert watch.store.count("Observation") == 6 and report.new_versions == 6
    assert watch.store.watermark("observation") == format_instant(T0 + timedelta(seconds=1))
    assert len(observation_searches(fake)) <= 3


def test_the_next_cycle_polls_from_the_watermark_minus_the_overlap(tmp_path: Path) -> None:
    fake = FakeFhir([anc(1, T0)])
    watch = watcher(fake, tmp_path / "s.sqlite", overlap_seconds=120)
    watch.cycle()
    fake.searches.clear()
    fake.resources[0] = anc(1, T0 + timedelta(seconds=30), version=2)  # an update

    report = watch.cycle()

    assert observation_searches(fake) == [f"ge{format_instant(T0 - timedelta(seconds=120))}"]
    assert report.new_versions == 1 and report.duplicates == 0
    held = ("2", format_instant(T0 + timedelta(seconds=30)))
    assert watch.store.held_version("Observation", "o1") == held


def test_a_version_seen_in_an_earlier_run_is_not_taken_again(tmp_path: Path) -> None:
    fake = FakeFhir([anc(n, T0 + timedelta(seconds=n)) for n in range(4)])
    first = watcher(fake, tmp_path / "s.sqlite", overlap_seconds=3600)
    assert first.cycle().new_versions == 4
    first.store.close()

    again = watcher(fake, tmp_path / "s.sqlite", overlap_seconds=3600)  # a restart
    report = again.cycle()
    assert (report.new_versions, report.duplicates, report.patients_decided) == (0, 4, 0)


def test_the_page_bound_stops_a_cycle_and_the_next_one_resumes(tmp_path: Path) -> None:
    fake = FakeFhir([anc(n, T0 + timedelta(seconds=n)) for n in range(10)])
    watch = watcher(fake, tmp_path / "s.sqlite", page_size=2, max_pages_per_cycle=2)

    first = watch.cycle()
    assert not first.complete
    assert watch.store.count("Observation") == 3  # two pages, one boundary resource shared
    assert watch.store.dirty()  # decided once the poll has caught up

    for _ in range(10):
        if watch.cycle().complete:
            break
    assert watch.store.count("Observation") == 10 and watch.store.dirty() == []


@pytest.mark.parametrize("stop_after", [0, 1])
def test_a_stop_request_ends_the_cycle_after_the_current_step(
    tmp_path: Path, stop_after: int
) -> None:
    fake = FakeFhir([anc(n, T0 + timedelta(seconds=n)) for n in range(6)])
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > stop_after

    watch = watcher(fake, tmp_path / "s.sqlite", page_size=2)
    watch.stop = stop
    report = watch.cycle()
    assert not report.complete
    assert report.pages == stop_after  # 0: before the first page; 1: after it


class RefusingOnce(FakeFhir):
    """Refuses the first batch entry by entry (HTTP 400), accepts the next one."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        super().__init__(resources)
        self.batches = 0

    def batch(self, entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        self.batches += 1
        if self.batches == 1:
            return [{"response": {"status": "400 Bad Request"}} for _ in entries]
        return [
            {
                "response": {"status": "201 Created"},
                "resource": {**e["resource"], "id": f"di{n}", "meta": {"versionId": "1"}},
            }
            for n, e in enumerate(entries)
        ]


def test_a_refused_decision_is_kept_and_decided_again_next_cycle(tmp_path: Path) -> None:
    low = anc(1, T0)
    low["valueQuantity"]["value"] = 1200
    fake = RefusingOnce([low])
    watch = watcher(fake, tmp_path / "s.sqlite")

    first = watch.cycle()
    assert (first.write_errors, first.issues_created) == (1, 0)
    assert watch.store.dirty() == ["Patient/p1"]

    second = watch.cycle()
    assert (second.new_versions, second.write_errors, second.issues_created) == (0, 0, 1)
    assert watch.store.dirty() == []
    assert watch.cycle().patients_decided == 0  # decided and written: done


def test_a_patient_with_nothing_new_is_decided_again_when_an_anc_falls_due(
    tmp_path: Path,
) -> None:
    dispense = {
        "resourceType": "MedicationDispense",
        "id": "d1",
        "meta": {"versionId": "1", "lastUpdated": format_instant(T0)},
        "status": "completed",
        "medicationCodeableConcept": {
            "coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "2626"}]
        },
        "subject": {"reference": "Patient/p1"},
        "whenHandedOver": "2026-01-05T10:00:00Z",
        "daysSupply": {"value": 7},
    }
    fake = RefusingOnce([anc(1, T0), dispense])
    fake.batches = 1  # accept every write
    watch = watcher(fake, tmp_path / "s.sqlite")
    assert watch.cycle().issues_created == 0  # weekly monitoring, next ANC not yet due

    watch.evaluation = replace(watch.evaluation, as_of=T0 + timedelta(days=6))
    assert watch.cycle().patients_decided == 0  # not due yet: nobody to decide

    watch.evaluation = replace(watch.evaluation, as_of=T0 + timedelta(days=30))
    report = watch.cycle()
    # The overdue finding, and the month's PSF waits for the prescriber (labs were missed).
    assert (report.new_versions, report.patients_decided, report.issues_created) == (0, 1, 2)
    written = sorted(
        r["code"]["coding"][1]["code"]
        for r in watch.store.patient_resources("Patient/p1")
        if r["resourceType"] == "DetectedIssue"
    )
    assert written == ["anc-monitoring-overdue", "psf-prescriber-action-required"]
    assert watch.cycle().patients_decided == 0  # overdue is written once


@pytest.mark.parametrize(("later", "stands"), [("preliminary", "final"), ("amended", "amended")])
def test_a_later_unreleased_version_never_displaces_the_held_release(
    tmp_path: Path, later: str, stands: str
) -> None:
    """The state holds one version of each result: a released result updated on the EHR to a
    version not yet released stays as released (adapter.core.labs.keeps_release), as batch
    mode decides over every version; a released update replaces it as ever."""
    fake = FakeFhir([anc(1, T0)])
    watch = watcher(fake, tmp_path / "s.sqlite", overlap_seconds=120)
    watch.cycle()
    fake.resources[0] = {**anc(1, T0 + timedelta(seconds=30), version=2), "status": later}

    report = watch.cycle()

    assert watch.store.resource("Observation", "o1")["status"] == stands  # type: ignore[index]
    assert report.duplicates == (1 if stands == "final" else 0)
