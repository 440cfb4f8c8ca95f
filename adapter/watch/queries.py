"""What the watcher polls, and the watermark arithmetic.

Each query is polled ascending by ``_lastUpdated`` from the stored watermark minus an overlap
window: a resource committed late (a long transaction, clocks a little apart) still has a
lastUpdated inside the window and is seen; de-duplication by id + versionId drops the repeats.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapter.pipeline.history import Query as Query
from adapter.pipeline.history import queries
from adapter.watch.state import instant_of

#: The searches watch polls are the pipeline's (one definition for polling and history reads).
watch_queries = queries


def format_instant(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def poll_from(watermark: str | None, overlap_seconds: float) -> str | None:
    """The `_lastUpdated=ge` bound for the first page of a cycle: the watermark minus the overlap.
    Without overlap the raw server string is sent back unchanged."""
    if watermark is None:
        return None
    if overlap_seconds <= 0:
        return watermark
    moment = instant_of(watermark)
    if moment is None:
        return watermark  # not an instant we can do arithmetic on: poll from it exactly
    return format_instant(moment - timedelta(seconds=overlap_seconds))


def later(candidate: str, than: str | None) -> bool:
    """Whether raw instant `candidate` is after `than` (None: nothing yet)."""
    if than is None:
        return True
    a, b = instant_of(candidate), instant_of(than)
    if a is not None and b is not None:
        return a > b
    return candidate > than
