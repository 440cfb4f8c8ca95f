"""Gap detection: a table at the edges, and properties over random delivery (drops, reordering,
heartbeats, restarts)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.subscriptions.gaps import Progress, Span, observe
from adapter.subscriptions.watchdog import SILENCE_FACTOR, Watch

#: mark before, numbers carried, events-since-start -> missing spans, late, restarted, mark after
TABLE: list[
    tuple[int, tuple[int, ...], int | None, tuple[Span, ...], tuple[int, ...], bool, int]
] = [
    (0, (), 0, (), (), False, 0),  # handshake of a new subscription
    (0, (1,), 1, (), (), False, 1),  # the first event
    (1, (2,), 2, (), (), False, 2),  # the next one
    (1, (3,), 3, ((2, 2),), (), False, 3),  # one lost in between
    (1, (5,), 5, ((2, 4),), (), False, 5),  # several lost
    (2, (), 2, (), (), False, 2),  # heartbeat, nothing new
    (2, (), 4, ((3, 4),), (), False, 4),  # heartbeat reveals the last two lost
    (0, (7,), 7, ((1, 6),), (), False, 7),  # first contact mid-stream: all before it missing
    (3, (4, 6), 6, ((5, 5),), (), False, 6),  # a batch with a hole
    (5, (4,), 5, (), (4,), False, 5),  # out of order: 4 after 5 (already recovered) is late
    (5, (3,), 3, (), (3,), False, 5),  # an older event arrives last: late, not a restart
    (5, (), 3, (), (), False, 5),  # a stale heartbeat: no news
    (3, (5,), None, ((4, 4),), (), False, 5),  # a server that sends no count
    (3, (), None, (), (), False, 3),
]


@pytest.mark.parametrize(
    ("mark", "numbers", "since", "missing", "late", "restarted", "after"), TABLE
)
def test_gap_table(
    mark: int,
    numbers: tuple[int, ...],
    since: int | None,
    missing: tuple[Span, ...],
    late: tuple[int, ...],
    restarted: bool,
    after: int,
) -> None:
    step = observe(Progress("s", mark), numbers, since)
    assert step.missing == missing
    assert step.late == late
    assert step.restarted is restarted
    assert step.progress == Progress("s", after)


def test_only_a_handshake_restarts_the_numbering() -> None:
    step = observe(Progress("s", 5), (), 0, handshake=True)
    assert step.restarted and step.progress.mark == 0 and step.missing == ()
    step = observe(Progress("s", 5), (), 2, handshake=True)
    assert step.restarted and step.missing == ((1, 2),)
    assert not observe(Progress("s", 5), (), 7, handshake=True).restarted


def test_impossible_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        observe(Progress("s"), (0,), 1)
    with pytest.raises(ValueError):
        observe(Progress("s"), (), -1)


def _expand(spans: tuple[Span, ...]) -> set[int]:
    return {n for first, last in spans for n in range(first, last + 1)}


@settings(max_examples=150, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=60),
    data=st.data(),
)
def test_every_event_is_received_or_recovered_exactly_once(total: int, data: st.DataObject) -> None:
    """A server emits events 1..total, drops some, reorders the rest, then sends a heartbeat with
    its count. Every number is either received (first time) or handed to recovery, never both
    and never twice; nothing above the count is invented."""
    numbers = list(range(1, total + 1))
    delivered = data.draw(
        st.lists(st.sampled_from(numbers), unique=True) if numbers else st.just([])
    )
    order = data.draw(st.permutations(delivered))
    progress = Progress("s")
    received_first: list[int] = []
    recovered: list[int] = []
    for n in order:
        step = observe(progress, (n,), n)  # each event says the count at its emission
        if n in step.late:
            assert n in recovered  # only what recovery already took comes late
        else:
            received_first.append(n)
        recovered.extend(sorted(_expand(step.missing)))
        progress = step.progress
    final = observe(progress, (), total)  # the heartbeat
    recovered.extend(sorted(_expand(final.missing)))
    assert len(recovered) == len(set(recovered))
    assert set(received_first).isdisjoint(recovered)
    assert set(received_first) | set(recovered) == set(numbers)
    assert final.progress.mark == total


@settings(max_examples=200, deadline=None)
@given(
    mark=st.integers(min_value=0, max_value=10**6),
    numbers=st.lists(st.integers(min_value=1, max_value=10**6), max_size=20),
    since=st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_the_mark_never_drops_below_what_was_said(
    mark: int, numbers: list[int], since: int | None
) -> None:
    step = observe(Progress("s", mark), numbers, since)
    said = [*numbers, *([since] if since is not None else [])]
    assert step.progress.mark >= max(said, default=0)
    assert not step.restarted
    assert not any(first <= n <= last for n in numbers for first, last in step.missing)
    assert all(first <= last for first, last in step.missing)


@pytest.mark.parametrize(
    ("period", "silent_for", "silent"),
    [
        (10.0, 0.0, False),
        (10.0, 10.0, False),  # one period: a heartbeat may be just late
        (10.0, 20.0, False),  # exactly two periods: not yet
        (10.0, 20.001, True),  # more than two periods
        (0.0, 10_000.0, False),  # no heartbeat asked for
    ],
)
def test_watchdog_silence_is_more_than_two_periods(
    period: float, silent_for: float, silent: bool
) -> None:
    assert SILENCE_FACTOR == 2
    watch = Watch("s", period, last_heard=100.0)
    assert watch.is_silent(100.0 + silent_for) is silent


def test_hearing_moves_the_watch_forward_only() -> None:
    watch = Watch("s", 10.0, last_heard=100.0).heard(130.0)
    assert watch.last_heard == 130.0 and not watch.is_silent(140.0)
    assert watch.heard(90.0).last_heard == 130.0


def test_a_late_arrival_is_taken_out_of_what_waits_for_recovery() -> None:
    from adapter.subscriptions.gaps import Waiting, due, settle

    waiting = (Waiting(2, 5, 10.0), Waiting(8, 8, 20.0))
    assert settle(waiting, [3]) == (Waiting(2, 2, 10.0), Waiting(4, 5, 10.0), Waiting(8, 8, 20.0))
    assert settle(waiting, [2, 5, 8]) == (Waiting(3, 4, 10.0),)
    assert settle(waiting, [1, 9]) == waiting
    assert due(waiting, 10.0) == ((Waiting(2, 5, 10.0),), (Waiting(8, 8, 20.0),))
    assert due(waiting, 9.9) == ((), waiting)


@settings(max_examples=100, deadline=None)
@given(
    spans=st.lists(
        st.tuples(st.integers(1, 50), st.integers(0, 5)).map(lambda t: (t[0], t[0] + t[1])),
        max_size=5,
    ),
    arrived=st.lists(st.integers(1, 60), max_size=20),
)
def test_settle_keeps_exactly_the_numbers_that_did_not_arrive(
    spans: list[tuple[int, int]], arrived: list[int]
) -> None:
    from adapter.subscriptions.gaps import Waiting, settle

    waiting = [Waiting(a, b, 0.0) for a, b in spans]
    before = {n for a, b in spans for n in range(a, b + 1)}
    after = settle(waiting, arrived)
    assert {n for w in after for n in range(w.first, w.last + 1)} == before - set(arrived)
    assert all(w.first <= w.last for w in after)
