"""Sharing work items between processes (adapter/batch/processes.py): results in item order
whatever the start order, the share the calling process takes, an item's exception raised in
its place, and workers that never outlive the run or hang it (killed, or their parent killed)."""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from adapter.batch import processes
from adapter.errors import InternalError

REPO = Path(__file__).resolve().parents[1]


def _square_with_pid(number: int) -> tuple[int, int]:
    return number * number, os.getpid()


def _slow_square_with_pid(number: int) -> tuple[int, int]:
    time.sleep(0.002)  # long enough that neither process takes every item before the other
    return _square_with_pid(number)


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
    results = list(processes.ordered_map(_square_with_pid, range(count), jobs, start_order=order))
    assert [value for value, _ in results] == [n * n for n in range(count)]


def test_the_caller_computes_the_back_of_the_start_order_itself() -> None:
    """Workers take items from the front of the start order, the caller from its back: the
    costliest go to the workers, and what the caller computes never travels."""
    here: list[int] = []

    def at_home(number: int) -> tuple[int, int]:
        here.append(number)
        return _slow_square_with_pid(number)

    order = list(range(40))
    results = list(
        processes.ordered_map(_slow_square_with_pid, range(40), 2, start_order=order, here=at_home)
    )
    pids = {pid for _, pid in results}
    assert os.getpid() in pids and len(pids) == 2  # both processes took a share
    assert here, "the caller took none"
    assert here == sorted(here, reverse=True)  # from the back, in turn
    assert min(here) > 0  # the front (started first) went to the worker
    own = {n for n, (_, pid) in enumerate(results) if pid == os.getpid()}
    assert own == set(here)


def test_one_job_runs_everything_here() -> None:
    results = list(processes.ordered_map(_square_with_pid, range(5), 1))
    assert {pid for _, pid in results} == {os.getpid()}


def test_a_start_order_that_is_not_an_order_of_the_items_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="start_order"):
        list(processes.ordered_map(_square_with_pid, range(3), 2, start_order=[0, 0, 1]))


class _Odd(Exception):
    pass


def _fails_at_three(number: int) -> int:
    if number == 3:
        raise _Odd(f"item {number}")
    return number


def test_an_items_exception_is_raised_when_its_result_is_due() -> None:
    results = processes.ordered_map(
        _fails_at_three, range(8), 2, start_order=[3, 0, 1, 2, 4, 5, 6, 7]
    )
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(_Odd, match="item 3"):
        next(results)


def _unpicklable(number: int) -> object:
    return (lambda: number) if os.getpid() != _PARENT[0] else number


_PARENT = [os.getpid()]


def test_a_result_that_cannot_travel_is_an_internal_error_naming_it() -> None:
    _PARENT[0] = os.getpid()
    with pytest.raises(InternalError, match="could not be sent back"):
        list(processes.ordered_map(_unpicklable, range(6), 2))


def _dies_in_a_worker(number: int) -> int:
    if os.getpid() != _PARENT[0]:
        os.kill(os.getpid(), signal.SIGKILL)
    return number


def test_a_worker_killed_fails_the_run_instead_of_hanging() -> None:
    _PARENT[0] = os.getpid()
    began = time.monotonic()
    with pytest.raises(InternalError, match="worker process ended unexpectedly"):
        list(processes.ordered_map(_dies_in_a_worker, range(6), 2, start_order=[5, 4, 3, 2, 1, 0]))
    assert time.monotonic() - began < 30


def _slow(number: int) -> int:
    time.sleep(0.05)
    return number


def _results_folders() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "rems-adapter-results-*")))


def test_a_run_stopped_early_leaves_no_worker_and_no_files() -> None:
    before = _results_folders()
    results: Iterator[int] = processes.ordered_map(_slow, range(40), 3)
    assert next(results) == 0
    workers = [child.pid for child in _children()]
    assert workers
    results.close()  # the consumer stops (an error further on, say)
    assert not [pid for pid in workers if _running(pid)]
    assert _results_folders() == before


def _children() -> list[object]:
    import multiprocessing

    return list(multiprocessing.active_children())


@pytest.mark.parametrize("fork", [True, False])
def test_spawned_workers_give_the_same_results(fork: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where processes cannot fork (not Linux), an executor of spawned workers does the work."""
    monkeypatch.setattr(processes, "can_fork", lambda: fork)
    order = [4, 0, 3, 1, 2]
    results = list(processes.ordered_map(_square_with_pid, range(5), 2, start_order=order))
    assert [value for value, _ in results] == [n * n for n in range(5)]
    assert results[order[0]][1] != os.getpid()  # the first item went to the worker


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_end_when_their_parent_is_killed(tmp_path: Path) -> None:
    """A parent killed (say by the out-of-memory killer) leaves no worker waiting forever."""
    pids = tmp_path / "pids"
    script = _noting_pids(
        pids, 60, "list(processes.ordered_map(work, range(4), 3, here=lambda n: time.sleep(60)))"
    )
    before = _results_folders()
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        workers = _wait_for_pids(pids, 2)
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
    # A parent killed outright cannot remove its temporary folder: it is left empty (no result
    # was written, and the claims lock has no name).
    left = _results_folders() - before
    for folder in left:
        assert os.listdir(folder) == []
        os.rmdir(folder)
    assert not alive, "workers outlived their killed parent"


def _noting_pids(pids: Path, seconds: float, run: str) -> str:
    """A script whose items note the pid computing them in `pids`, then sleep; `run` runs them."""
    work = textwrap.dedent(
        f"""
        import os, sys, time
        from adapter.batch import processes

        def work(n):
            with open({str(pids)!r}, "a") as out:
                out.write(f"{{os.getpid()}}\\n")
            time.sleep({seconds})
            return n
        """
    )
    return f"{work}\n{run}\n"


def _wait_for_pids(pids: Path, count: int) -> list[int]:
    """The pids noted once `count` processes have noted theirs (at most 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pids.exists() and len(set(pids.read_text().split())) >= count:
            break
        time.sleep(0.05)
    noted = [int(pid) for pid in dict.fromkeys(pids.read_text().split())]
    assert len(noted) >= count
    return noted


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_an_interrupt_stops_the_workers_without_a_word_from_them(tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: the workers leave it to the parent (which stops
    them and says so once), instead of each printing its own KeyboardInterrupt."""
    pids = tmp_path / "pids"
    script = _noting_pids(
        pids,
        0.2,
        "try:\n    list(processes.ordered_map(work, range(200), 3))\n"
        "except KeyboardInterrupt:\n    print('interrupted', file=sys.stderr)",
    )
    run = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _wait_for_pids(pids, 3)  # the parent and both workers are computing
        os.killpg(run.pid, signal.SIGINT)
        _, stderr = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert stderr == "interrupted\n"
    workers = {int(pid) for pid in pids.read_text().split()} - {run.pid}
    assert len(workers) == 2
    assert not [pid for pid in workers if _running(pid)]
