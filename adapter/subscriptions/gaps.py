"""Gap detection for one subscription's event stream (pure).

A Backport server numbers the events of each Subscription 1, 2, 3... and every notification
says how many there have been (``events-since-subscription-start``, inclusive of the events it
carries). A subscriber that knows the highest number it has accounted for can tell which events
never arrived: the numbers above that mark, up to the server's count, that the notification does
not carry. Heartbeats and ``$status`` answers carry a count and no events, so they reveal a lost
last event too.

The mark moves up to the server's count as soon as a gap is seen: the missing numbers are handed
to recovery (``$events`` where the server offers it, else a query from the watermark), whose work
is durable and idempotent. An event that arrives after its number was handed to recovery (sent
out of order, or retried by the server) is *late*: it is processed again, and has no second effect.
A count below the mark is stale news, not a restart: notifications are sent concurrently and
each carries the count of its own moment, so an earlier one may arrive later. Only a
*handshake* with a count below the mark says the stream started again (a server that lost its
numbering): the mark then starts from the new count.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: A missing stretch of event numbers, inclusive on both ends.
Span = tuple[int, int]


@dataclass(frozen=True)
class Progress:
    """The highest event number of one Subscription accounted for (received or recovered)."""

    subscription: str
    mark: int = 0


@dataclass(frozen=True)
class Step:
    """What one notification taught: the new progress, the spans to recover, the events that
    came late, and whether the server's numbering restarted."""

    progress: Progress
    missing: tuple[Span, ...] = ()
    late: tuple[int, ...] = ()
    restarted: bool = False

    @property
    def missing_count(self) -> int:
        return sum(last - first + 1 for first, last in self.missing)


def observe(
    progress: Progress,
    numbers: Iterable[int],
    events_since_start: int | None,
    *,
    handshake: bool = False,
) -> Step:
    """Account for a notification carrying event `numbers` and the server's count.

    `events_since_start` None (a server that does not send it): only the numbers carried count,
    so a gap shows when a later number arrives. `handshake`: the notification is a handshake,
    whose count may restart the numbering."""
    carried = sorted(set(numbers))
    if any(n < 1 for n in carried) or (events_since_start is not None and events_since_start < 0):
        raise ValueError("event numbers start at 1 and counts are never negative")
    mark = progress.mark
    restarted = handshake and events_since_start is not None and events_since_start < mark
    if restarted:
        mark = 0
    high = max([mark, *carried, *([events_since_start] if events_since_start is not None else [])])
    late = tuple(n for n in carried if n <= mark)
    fresh = [n for n in carried if n > mark]
    missing: list[Span] = []
    cursor = mark + 1
    for n in [*fresh, high + 1]:
        if n > cursor:
            missing.append((cursor, min(n - 1, high)))
        cursor = max(cursor, n + 1)
    return Step(
        progress=Progress(progress.subscription, high),
        missing=tuple(span for span in missing if span[0] <= span[1]),
        late=late,
        restarted=restarted,
    )


@dataclass(frozen=True)
class Waiting:
    """Missing event numbers `first`..`last`, recovered at `due` unless they arrive first (the
    IG's advice: wait a little, an event may still be on its way, e.g. sent out of order)."""

    first: int
    last: int
    due: float


def settle(waiting: Iterable[Waiting], arrived: Iterable[int]) -> tuple[Waiting, ...]:
    """`waiting` without the numbers that `arrived` (a span is split around them)."""
    out = list(waiting)
    for n in sorted(set(arrived)):
        kept: list[Waiting] = []
        for span in out:
            if span.first <= n <= span.last:
                if span.first < n:
                    kept.append(Waiting(span.first, n - 1, span.due))
                if n < span.last:
                    kept.append(Waiting(n + 1, span.last, span.due))
            else:
                kept.append(span)
        out = kept
    return tuple(out)


def due(waiting: Iterable[Waiting], now: float) -> tuple[tuple[Waiting, ...], tuple[Waiting, ...]]:
    """(the spans to recover now, the spans still waiting)."""
    spans = tuple(waiting)
    return tuple(s for s in spans if s.due <= now), tuple(s for s in spans if s.due > now)
