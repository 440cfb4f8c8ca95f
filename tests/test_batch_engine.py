"""How batch mode shares its work between processes (adapter/batch/engine.py): the order tasks
are started in, the share the calling process takes, and workers that end with their parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from adapter.batch import engine
from adapter.batch.sources import PARSED_WEIGHT, SKIPPED_WEIGHT, Prefilter
from adapter.errors import InternalError
from adapter.mappings_loader import load_reference_data

REPO = Path(__file__).resolve().parents[1]


def _square_with_pid(number: int) -> tuple[int, int]:
    return number * number, os.getpid()


@pytest.mark.parametrize(
    ("count", "jobs", "order"),
    [
        (1, 2, None),
        (5, 2, None),
        (7, 2, [6, 5, 4, 3, 2, 1, 0]),
        (9, 3, [4, 8, 0, 7, 1, 6, 2, 5, 3]),
        (12, 2, [11, 0, 10, 1, 9, 2, 8, 3, 7, 4, 6, 5]),
    ],
)
def test_results_come_in_item_order_whatever_the_start_order(
    count: int, jobs: int, order: list[int] | None
) -> None:
    results = list(engine.ordered_map(_square_with_pid, range(count), jobs, start_order=order))
    assert [value for value, _ in results] == [n * n for n in range(count)]


def test_the_caller_computes_the_back_of_the_start_order_itself() -> None:
    """Workers take items from the front of the start order, the caller from its back: the
    costliest go to the workers, and what the caller computes never travels."""
    here: list[int] = []

    def at_home(number: int) -> tuple[int, int]:
        here.append(number)
        return _square_with_pid(number)

    order = list(range(40))
    results = list(
        engine.ordered_map(_square_with_pid, range(40), 2, start_order=order, here=at_home)
    )
    pids = {pid for _, pid in results}
    assert os.getpid() in pids and len(pids) == 2  # both processes took a share
    assert here, "the caller took none"
    assert here == sorted(here, reverse=True)  # from the back, in turn
    assert min(here) > 0  # the front (started first) went to the worker
    own = {n for n, (_, pid) in enumerate(results) if pid == os.getpid()}
    assert own == set(here)


def test_one_job_runs_everything_here() -> None:
    results = list(engine.ordered_map(_square_with_pid, range(5), 1))
    assert {pid for _, pid in results} == {os.getpid()}


def test_a_start_order_that_is_not_an_order_of_the_items_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="start_order"):
        list(engine.ordered_map(_square_with_pid, range(3), 2, start_order=[0, 0, 1]))


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


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed (say by the out-of-memory killer) leaves no worker waiting forever."""
    pids = tmp_path / "pids"
    script = textwrap.dedent(
        f"""
        import os, time
        from adapter.batch import engine

        def work(n):
            with open({str(pids)!r}, "a") as out:
                out.write(f"{{os.getpid()}}\\n")
            time.sleep(60)
            return n

        list(engine.ordered_map(work, range(4), 3, here=lambda n: time.sleep(60)))
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pids.exists() and len(pids.read_text().split()) >= 2:
                break
            time.sleep(0.05)
        workers = [int(pid) for pid in pids.read_text().split()]
        assert len(workers) >= 2
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    alive = set(workers)
    while alive and time.monotonic() < deadline:
        alive = {pid for pid in alive if _running(pid)}
        time.sleep(0.05)
    for pid in alive:  # never leave one behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    assert not alive, "workers outlived their killed parent"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"
