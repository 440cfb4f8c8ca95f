"""The heartbeat watchdog's rule (pure: times are plain seconds handed in by the caller).

A Backport Subscription with a heartbeat period promises a notification (a heartbeat or an
event) at least once per period. A subscriber that hears nothing for `SILENCE_FACTOR` periods
treats the channel as broken: it falls back to polling (and says so in a metric and the log) until
the subscription speaks again. One late heartbeat is not a failure; two missed ones are.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Silent = nothing heard for this many heartbeat periods (issue 12: "2 x the heartbeat period").
SILENCE_FACTOR = 2


@dataclass(frozen=True)
class Watch:
    """What the watchdog knows of one subscription: its heartbeat period and when it was last
    heard from (or, before its first notification, when the adapter started waiting for it)."""

    subscription: str
    heartbeat_seconds: float
    last_heard: float

    def heard(self, now: float) -> Watch:
        return Watch(self.subscription, self.heartbeat_seconds, max(self.last_heard, now))

    def silent_for(self, now: float) -> float:
        return max(0.0, now - self.last_heard)

    def is_silent(self, now: float) -> bool:
        """True once nothing has been heard for more than SILENCE_FACTOR heartbeat periods."""
        if self.heartbeat_seconds <= 0:
            return False  # no heartbeat asked for: silence is not a signal
        return self.silent_for(now) > SILENCE_FACTOR * self.heartbeat_seconds
