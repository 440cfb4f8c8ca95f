"""Results packed in columns for the hand-over between batch processes
(adapter/core/model.pack_columns, and the Collector's pickling that uses it): what is unpacked
equals what was packed, in order, whatever the fields hold."""

from __future__ import annotations

import pickle
from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.core.model import (
    LabObservation,
    PendingDispense,
    Supply,
    pack_columns,
    unpack_columns,
)
from adapter.fhir.collect import Collector, _Dispense

_ZONES = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), ZoneInfo("America/New_York")]
)
_TIMES = st.one_of(
    st.none(),
    st.builds(
        lambda moment, zone: moment.replace(tzinfo=zone),
        st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)),
        _ZONES,
    ),
)
_LABS = st.builds(
    LabObservation,
    ref=st.text(min_size=1, max_size=12).map(lambda t: f"Observation/{t}"),
    patient=st.sampled_from(["Patient/a", "Patient/b", "Patient/ü"]),
    role=st.sampled_from(["anc", "wbc", "neutrophil-pct"]),
    status=st.sampled_from(["final", "corrected", "entered-in-error"]),
    collected=_TIMES,
    value=st.one_of(st.none(), st.decimals(allow_nan=False, allow_infinity=False)),
    unit_code=st.one_of(st.none(), st.text(max_size=8)),
    unit_system=st.none(),
    unit_text=st.one_of(st.none(), st.text(max_size=8)),
    version=st.text(max_size=4),
    specimen=st.one_of(st.none(), st.just("Specimen/s1")),
    identifiers=st.lists(st.text(max_size=6), max_size=3).map(tuple),
    replaces=st.lists(st.text(max_size=6), max_size=2).map(tuple),
    issued=_TIMES,
    last_updated=st.text(max_size=24),
    arrival=st.integers(min_value=0, max_value=2**40),
    problem=st.one_of(st.none(), st.text(max_size=20)),
    collected_raw=st.text(max_size=24),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_LABS, max_size=30))
def test_unpacked_results_equal_the_packed_ones_in_order(labs: list[LabObservation]) -> None:
    back = unpack_columns(pickle.loads(pickle.dumps(pack_columns(labs), protocol=5)))
    assert back == labs
    for before, after in zip(labs, back, strict=True):
        assert type(after) is LabObservation
        assert str(after.value) == str(before.value)  # 1.50 stays 1.50, not 1.5
        for moment in ("collected", "issued"):
            if getattr(before, moment) is not None:
                assert getattr(after, moment).tzinfo == getattr(before, moment).tzinfo
    if back:  # still frozen
        with pytest.raises(AttributeError):
            back[0].value = None  # type: ignore[misc]


def test_values_of_several_classes_are_refused() -> None:
    lab = LabObservation("Observation/1", "Patient/a", "anc", "final", *[None] * 5)
    supply = Supply(
        "MedicationDispense/1", "Patient/a", datetime(2026, 1, 1, tzinfo=UTC), 7, "outpatient"
    )
    with pytest.raises(TypeError):
        pack_columns([lab, supply])
    assert pack_columns([]) is None and unpack_columns(None) == []


def test_a_collector_travels_with_its_results_per_patient_in_order() -> None:
    collector = Collector(None, datetime(2026, 3, 2, tzinfo=UTC))  # type: ignore[arg-type]
    for number, patient in enumerate(["Patient/b", "Patient/a", "Patient/b", "Patient/c"]):
        collector.labs[patient].append(
            LabObservation(
                f"Observation/{number}",
                patient,
                "anc",
                "final",
                None,
                Decimal("1.50"),
                None,
                None,
                None,
                arrival=number,
            )
        )
    collector.labs["Patient/empty"]  # a patient seen with nothing kept
    back = pickle.loads(pickle.dumps(collector, protocol=5))
    assert isinstance(back.labs, defaultdict)
    assert back.labs == collector.labs
    assert list(back.labs) == ["Patient/b", "Patient/a", "Patient/c", "Patient/empty"]
    assert [lab.ref for lab in back.labs["Patient/b"]] == ["Observation/0", "Observation/2"]
    assert back.clock == collector.clock and back.resources_read == collector.resources_read


def _supply(number: int) -> Supply:
    when = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=number)
    return Supply(f"MedicationDispense/{number}", "Patient/a", when, 7, "outpatient", ("P/1",))


def _pending(number: int) -> PendingDispense:
    return PendingDispense(f"MedicationDispense/p{number}", "Patient/a", None, 14, "discharge")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["supply", "pending", "none", "other"]), max_size=20))
def test_a_field_of_dataclass_values_of_several_classes_is_packed_by_class(kinds) -> None:
    values = {
        "supply": _supply,
        "pending": _pending,
        "none": lambda number: None,
        "other": lambda number: f"not a dataclass {number}",  # a mixed field: kept as it is
    }
    held = [
        _Dispense((number, "2026", number), values[kind](number), kind == "supply", None)
        for number, kind in enumerate(kinds)
    ]
    back = unpack_columns(pickle.loads(pickle.dumps(pack_columns(held), protocol=5)))
    assert back == held
    assert [type(item.item) for item in back] == [type(item.item) for item in held]


def test_a_collector_travels_with_its_dispenses_by_reference_in_order() -> None:
    collector = Collector(None, datetime(2026, 3, 2, tzinfo=UTC))  # type: ignore[arg-type]
    for number in (3, 1, 2):
        item = _supply(number) if number != 2 else _pending(number)
        collector.dispenses[f"MedicationDispense/{number}"] = _Dispense(
            (number, "", number), item, True, "Medication/m"
        )
    back = pickle.loads(pickle.dumps(collector, protocol=5))
    assert back.dispenses == collector.dispenses
    assert list(back.dispenses) == list(collector.dispenses)
