"""How batch mode cuts its work (adapter/batch/engine.py): what each task is expected to cost,
and the order tasks are started in."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapter.batch import engine
from adapter.batch.sources import PARSED_WEIGHT, SKIPPED_WEIGHT, Prefilter
from adapter.mappings_loader import load_reference_data

REPO = Path(__file__).resolve().parents[1]


def _prefilter() -> Prefilter:
    return engine.prefilter_for(load_reference_data())


@pytest.mark.parametrize(
    ("first_line", "weight"),
    [
        (b'{"resourceType":"Observation","id":"1"}\n', 1.0),
        (b'{"resourceType":"MedicationDispense","id":"1"}\n', PARSED_WEIGHT),
        (b'{"resourceType":"Specimen","id":"1"}\n', PARSED_WEIGHT),
        (b'{"resourceType":"Encounter","id":"1"}\n', SKIPPED_WEIGHT),
        (b'{"resourceType":"Bundle","type":"collection"}\n', PARSED_WEIGHT),
        (b'{ "resourceType": "Observation" }\n', PARSED_WEIGHT),  # not compact: parsed
        (b"", PARSED_WEIGHT),
    ],
)
def test_the_weight_of_a_file_follows_what_the_prefilter_does_with_its_lines(
    first_line: bytes, weight: float
) -> None:
    assert _prefilter().weight(first_line) == weight


def test_the_prefilter_is_compiled_once_per_mappings() -> None:
    data = load_reference_data()
    assert engine.prefilter_for(data) is engine.prefilter_for(data)


def test_costly_files_start_before_the_ranges_of_a_large_file_mostly_skipped(
    tmp_path: Path,
) -> None:
    observations = tmp_path / "Observation.ndjson"
    dispenses = tmp_path / "MedicationDispense.ndjson"
    encounters = tmp_path / "Encounter.ndjson"
    observations.write_bytes(b'{"resourceType":"Observation","id":"x"}\n' * 2000)
    dispenses.write_bytes(b'{"resourceType":"MedicationDispense","id":"x"}\n' * 300)
    encounters.write_bytes(b'{"resourceType":"Encounter","id":"x"}\n' * 300)
    files = [encounters, dispenses, observations]
    tasks = engine.plan(files, 16 * 1024, _prefilter())
    ranges = [task for task in tasks if task.path == str(observations)]
    assert len(ranges) > 3
    assert sum(task.cost for task in ranges) == observations.stat().st_size  # weight 1
    (dispense,) = (task for task in tasks if task.path == str(dispenses))
    assert dispense.cost == dispenses.stat().st_size * PARSED_WEIGHT
    order = engine.costliest_first(tasks)
    assert order[0] == dispense.number
    assert order[-1] == 0  # the encounters: skipped by their type, next to nothing
    assert sorted(order) == list(range(len(tasks)))
    # Strict: every line parsed, bytes weigh alike.
    assert [t.cost for t in engine.plan(files, 16 * 1024)] == [
        float((t.end or Path(t.path).stat().st_size) - t.start) for t in tasks
    ]
