"""Sharing a list of work items between this process and worker processes (issue 16).

`ordered_map` computes a function of every item on `jobs` processes and hands the results on in
the items' order. On Linux the workers are forked copies of this process: they see the items,
the function and everything this process holds without any of it being sent, they claim items
themselves from a counter in shared memory, and each writes its results to a file and says so
on a pipe. This process computes items too, between handing results on.

Why not `concurrent.futures.ProcessPoolExecutor` there: its manager thread must hold the
interpreter lock to pass an item to a worker or take a result back, while this process holds it
computing its own share; the thread then runs once per switch interval (5 ms), and a worker sat
idle 5-11 ms at every hand-over (timed at 10k Observations: the worker computed 40% of the time).
Where processes cannot be forked (not Linux) the executor is used, with spawned workers.
"""

from __future__ import annotations

import ctypes
import gc
import mmap
import multiprocessing
import os
import pickle
import shutil
import signal
import struct
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import suppress
from dataclasses import dataclass
from multiprocessing.connection import wait
from typing import Any, Generic, TypeVar

from adapter.errors import InternalError

if sys.platform != "win32":  # where processes can fork (the only users of its locks)
    import fcntl

_In = TypeVar("_In")
_Out = TypeVar("_Out")

#: How long this process waits for news from the workers before it looks again, and for a
#: worker to end once the work is done.
_WAIT_S = 1.0

_DIED = "a batch worker process ended unexpectedly (killed, or out of memory?)"


def default_jobs() -> int:
    """The CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def can_fork() -> bool:
    """Whether worker processes can start as copies of this one (Linux): they then see what it
    holds without it being sent to them."""
    return "fork" in multiprocessing.get_all_start_methods()


def ordered_map(
    function: Callable[[_In], _Out],
    items: Iterable[_In],
    jobs: int,
    initializer: Callable[..., object] | None = None,
    initargs: tuple[Any, ...] = (),
    start_order: Sequence[int] | None = None,
    here: Callable[[_In], _Out] | None = None,
) -> Iterator[_Out]:
    """`function` of every item, the results in the items' order, on `jobs` processes: this
    one and `jobs - 1` workers (`initializer` runs in each worker first).

    The items are started in `start_order` (indices; default: in order). The workers take them
    from its front (the first one each at once) and this process from its back, between handing
    results on: with the costliest first, this process takes the cheapest, and what it computes
    never travels between processes. It runs `here` for an item (default: `function`; set up as
    `initializer` would set up a worker). An exception an item raised is raised when its result
    is due. A worker that dies (killed, out of memory) fails the run with an InternalError; a
    worker ends with this process (Linux)."""
    items = list(items)
    order = list(range(len(items)) if start_order is None else start_order)
    if sorted(order) != list(range(len(items))):
        raise InternalError("ordered_map: start_order is not an order of the items")
    local = here or function
    if jobs <= 1 or len(items) <= 1:
        for item in items:
            yield local(item)
        return
    job = _Job(function, items, order, min(jobs - 1, len(items) - 1), local, initializer, initargs)
    # What this process holds moves out of the collector's sight before the fork: a worker's
    # collections would otherwise walk (and so copy, page by page) every inherited object.
    gc.freeze()
    try:
        if can_fork():
            yield from _forked(job)
        else:  # pragma: no cover - not Linux (tests/test_batch_processes.py runs it on Linux)
            yield from _pooled(job)
    finally:
        gc.unfreeze()


@dataclass(frozen=True)
class _Job(Generic[_In, _Out]):
    """One `ordered_map` call, as either way of sharing it takes it."""

    function: Callable[[_In], _Out]  # what the workers run
    items: list[_In]
    order: list[int]  # the start order
    workers: int
    local: Callable[[_In], _Out]  # what this process runs
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]


# ------------------------------------------------------------------ forked workers


class _Claims:
    """The items not started yet: positions `front` to `back` of the start order, in memory
    shared with the forked workers; workers claim from the front, this process from the back.

    The lock is a POSIX record lock on a file: the kernel releases it when its holder dies, so
    a killed worker never leaves the others waiting (and it costs no import: the standard
    library's process-shared lock and array cost ~7 ms the first time, a tenth of a small run)."""

    def __init__(self, folder: str, front: int, back: int) -> None:
        self.ends = mmap.mmap(-1, _ENDS.size)  # anonymous and shared: seen after a fork
        _ENDS.pack_into(self.ends, 0, front, back)
        path = os.path.join(folder, "claims.lock")
        self.lock = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.unlink(path)  # the lock lives on the open file (inherited by the workers), not its name

    def take(self, from_front: bool) -> int | None:
        """A position of the start order to compute, or None when every item is taken."""
        fcntl.lockf(self.lock, fcntl.LOCK_EX)
        try:
            front, back = _ENDS.unpack_from(self.ends)
            if front >= back:
                return None
            if from_front:
                _ENDS.pack_into(self.ends, 0, front + 1, back)
                return int(front)
            _ENDS.pack_into(self.ends, 0, front, back - 1)
            return int(back - 1)
        finally:
            fcntl.lockf(self.lock, fcntl.LOCK_UN)

    def close(self) -> None:
        """No more claims (the workers stop after their current item)."""
        fcntl.lockf(self.lock, fcntl.LOCK_EX)
        _, back = _ENDS.unpack_from(self.ends)
        _ENDS.pack_into(self.ends, 0, back, back)
        fcntl.lockf(self.lock, fcntl.LOCK_UN)
        os.close(self.lock)


_ENDS = struct.Struct("<qq")


def _result_path(folder: str, index: int) -> str:
    return os.path.join(folder, f"{index}.pickle")


def _work(job: _Job[Any, Any], first: int, claims: _Claims, folder: str, done: int) -> None:
    """A worker: its first position, then positions claimed from the front until none is left;
    each result (or the exception raised) pickled into `folder`, its index written to `done`."""
    _start_worker(job.initializer, job.initargs)
    position: int | None = first
    while position is not None:
        index = job.order[position]
        try:
            outcome: tuple[bool, Any] = (True, job.function(job.items[index]))
        except Exception as error:  # raised again in the parent, when the result is due
            outcome = (False, error)
        path = _result_path(folder, index)
        with open(path, "wb") as handle:
            try:
                pickle.dump(outcome, handle, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as error:  # an unpicklable result: a bug, named
                handle.seek(0)
                handle.truncate()
                failure = InternalError(f"a worker's result could not be sent back: {error}")
                pickle.dump((False, failure), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.write(done, struct.pack("<q", index))  # 8 bytes: one atomic write on a pipe
        position = claims.take(from_front=True)


def _forked(job: _Job[_In, _Out]) -> Iterator[_Out]:
    context = multiprocessing.get_context("fork")
    folder = tempfile.mkdtemp(prefix="rems-adapter-results-")
    claims = _Claims(folder, job.workers, len(job.order))  # each worker's first is its own
    ready, done = os.pipe()
    processes = []
    complete = False
    try:
        for first in range(job.workers):
            process = context.Process(
                target=_work, args=(job, first, claims, folder, done), daemon=True
            )
            process.start()
            processes.append(process)
        os.close(done)  # the workers hold the writing end: all gone, the pipe ends
        done = -1
        yield from _gather(job, claims, folder, ready, processes)
        complete = True
    finally:
        claims.close()
        for process in processes:
            # Every item done: the workers are ending by themselves (the standard library
            # reaps them later: waiting here cost ~2 ms of a small run). Else one may still be
            # computing an item no one will take: it is stopped.
            if not complete and process.exitcode is None:
                process.kill()
                process.join(timeout=_WAIT_S)
        for end in (ready, done):
            if end >= 0:
                os.close(end)
        shutil.rmtree(folder, ignore_errors=True)


def _gather(
    job: _Job[_In, _Out], claims: _Claims, folder: str, ready: int, processes: list[Any]
) -> Iterator[_Out]:
    """The results in item order: this process's own, or a worker's once it has said so; this
    process computes an item of its own whenever the next result is not there yet."""
    finished: set[int] = set()  # indices whose result a worker has written
    computed: dict[int, _Out] = {}
    pending = b""
    living = list(processes)
    listening = True  # until every worker has closed its end of the pipe
    for next_out in range(len(job.items)):
        while next_out not in computed and next_out not in finished:
            waiting = ([ready] if listening else []) + [process.sentinel for process in living]
            if not waiting or not wait(waiting, timeout=0):  # no news: compute one here
                position = claims.take(from_front=False)
                if position is not None:
                    index = job.order[position]
                    computed[index] = job.local(job.items[index])
                    continue
                if not waiting:  # every item taken, every worker gone, a result missing
                    raise InternalError(_DIED)
            signalled = wait(waiting, timeout=_WAIT_S)
            if listening and ready in signalled:
                chunk = os.read(ready, 8 * 1024)
                if chunk:
                    pending += chunk
                    whole = len(pending) - len(pending) % 8
                    finished.update(index for (index,) in struct.iter_unpack("<q", pending[:whole]))
                    pending = pending[whole:]
                    continue
                listening = False
            for process in [p for p in living if p.sentinel in signalled]:
                process.join()
                if process.exitcode != 0:
                    raise InternalError(_DIED)
                living.remove(process)
        if next_out in computed:
            yield computed.pop(next_out)
        else:
            yield _load(folder, next_out)


def _load(folder: str, index: int) -> Any:
    path = _result_path(folder, index)
    with open(path, "rb") as handle:
        succeeded, value = pickle.load(handle)
    os.unlink(path)
    if not succeeded:
        raise value
    return value


def _start_worker(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """A worker's start: it ends with its parent (Linux: a worker would otherwise go on
    computing, or wait for work forever, once the parent was killed); it leaves an interrupt
    (Ctrl-C reaches the whole process group) to the parent, which stops the workers and says so
    in one line (each worker's KeyboardInterrupt used to print its own); then the caller's
    `initializer`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        with suppress(OSError, AttributeError):  # no C library to ask: as before
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if initializer is not None:
        initializer(*initargs)


_PR_SET_PDEATHSIG = 1


# ------------------------------------------------------------------ spawned workers


def _pooled(job: _Job[_In, _Out]) -> Iterator[_Out]:
    """The same with an executor of spawned workers (`function`, the items and the results
    travel pickled)."""
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(
        job.workers,
        mp_context=context,
        initializer=_start_worker,
        initargs=(job.initializer, job.initargs),
    )
    # Enough started that a worker never waits while this process computes an item of its own.
    ahead = 2 * job.workers
    items, order = job.items, job.order
    futures: dict[int, Future[_Out]] = {}
    computed: dict[int, _Out] = {}
    front, back, next_out = 0, len(order), 0
    try:
        while next_out < len(items):
            running = sum(1 for future in futures.values() if not future.done())
            while front < back and running < ahead:
                futures[order[front]] = pool.submit(job.function, items[order[front]])
                front, running = front + 1, running + 1
            if next_out in computed:
                yield computed.pop(next_out)
            elif next_out in futures and (futures[next_out].done() or front >= back):
                yield futures.pop(next_out).result()  # waits only when nothing is left to take
            else:
                back -= 1
                computed[order[back]] = job.local(items[order[back]])
                continue
            next_out += 1
    except BrokenProcessPool as error:  # a worker was killed: never wait for it forever
        raise InternalError(_DIED) from error
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
