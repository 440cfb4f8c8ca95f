"""The outbox service: performs the effects the worker enqueued, with retries and dead letters.

Each pass claims due effects (a lease each; the effects of one patient in the order they were
enqueued) and hands each to the sink of its kind. The sink's answer decides what happens:

- done: the effect is complete; what it produced is kept (the DetectedIssue as the EHR holds
  it goes into the store, so later decisions know it was written);
- `Retry` (the EHR or REMS unavailable, timed out, 5xx, 429): tried again after a backoff
  (`RetryPolicy`: doubling, jittered, capped) until `max_attempts`, then a dead letter;
- `GiveUp` (a refusal retrying will not fix: 4xx): a dead letter at once;
- `Conflict` (412: the resource changed on the EHR since we read it): the EHR's version is
  kept and the patient is decided again on it.

Dead letters stay until an operator replays them (`rems-adapter outbox list|show|replay`).
Delivery is at least once (a crash after the write and before `complete_effect` performs it
again); every sink's effect is idempotent, so every effect takes place exactly once.
"""

from __future__ import annotations

import abc
import logging
import random
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from adapter.fhir.read import decision_identifier
from adapter.pipeline.metrics import Metrics
from adapter.pipeline.worker import where
from adapter.store import Effect, NewItem, Store

log = logging.getLogger(__name__)


class Retry(Exception):
    """Try the effect again later. `system`: "ehr" or "rems"; `after`: the upstream's
    Retry-After, when it gave one. The message is safe to log and to show (no PHI)."""

    def __init__(self, message: str, *, system: str = "ehr", after: float | None = None) -> None:
        super().__init__(message)
        self.system = system
        self.after = after


class GiveUp(Exception):
    """Retrying will not help: the effect becomes a dead letter with this message."""


class Conflict(Exception):
    """The target changed upstream: keep `current` (the upstream's resource) and decide the
    patient again."""

    def __init__(self, message: str, current: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.current = current


@dataclass(frozen=True)
class Performed:
    """What a sink did: `result` (JSON-able, kept on the effect), `keep` (a resource to hold in
    the store under the effect's patient, with our decision `identifier` when it is one of our
    DetectedIssues), `stored_on_ehr` (a DetectedIssue is now on the EHR: the end-to-end latency
    ends here), `base_version` (`keep` is a version we made only to link a decision: the version
    it was edited from, so that our own edit never reads as new input)."""

    result: dict[str, Any]
    keep: dict[str, Any] | None = None
    identifier: str | None = None
    stored_on_ehr: bool = False
    base_version: str | None = None


class Sink(abc.ABC):
    #: the effect kinds this sink performs
    kinds: tuple[str, ...]

    @abc.abstractmethod
    def perform(self, effect: Effect) -> Performed:
        """Perform one effect (idempotently), or raise Retry / GiveUp / Conflict."""


@dataclass(frozen=True)
class RetryPolicy:
    first_seconds: float = 1.0
    max_seconds: float = 300.0
    #: attempts before a dead letter (with the defaults: about 4 hours of an outage)
    max_attempts: int = 60

    def delay(self, attempts: int, after: float | None = None) -> float:
        """Seconds before attempt `attempts + 1` (attempts already made >= 1)."""
        base = min(self.first_seconds * (2 ** max(attempts - 1, 0)), self.max_seconds)
        jittered = base * (0.75 + 0.5 * random.random())
        return float(max(jittered, min(after or 0.0, self.max_seconds)))


class Outbox:
    def __init__(
        self,
        store: Store,
        sinks: Mapping[str, Sink],
        *,
        policy: RetryPolicy | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        holder: str | None = None,
        batch: int = 20,
        lease_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.sinks = dict(sinks)
        self.policy = policy or RetryPolicy()
        self.metrics = metrics
        self.clock = clock
        self.holder = holder or f"outbox-{uuid.uuid4().hex[:12]}"
        self.batch = batch
        self.lease_seconds = lease_seconds

    def run_once(self) -> int:
        """Perform the effects due now; how many were claimed."""
        effects = self.store.claim_effects(
            self.holder, self.clock(), self.lease_seconds, self.batch
        )
        for effect in effects:
            self.perform(effect)
        return len(effects)

    def drain(self, limit: int = 100_000) -> int:
        done = 0
        while done < limit:
            count = self.run_once()
            if count == 0:
                return done
            done += count
        return done

    def perform(self, effect: Effect) -> None:
        sink = self.sinks.get(effect.kind)
        if sink is None:
            self.store.dead_letter(effect.id, f"no sink performs {effect.kind}", self.clock())
            return
        try:
            performed = sink.perform(effect)
        except Retry as retry:
            if self.metrics is not None:
                self.metrics.upstream_error(retry.system)
            self._retry(effect, str(retry), retry.after)
            return
        except GiveUp as refusal:
            log.warning(
                "an effect (%s) was refused and is now a dead letter: %s", effect.kind, refusal
            )
            self.store.dead_letter(effect.id, str(refusal), self.clock())
            return
        except Conflict as conflict:
            self._conflict(effect, conflict)
            return
        except Exception as error:
            self._retry(effect, f"unexpected {where(error)}", None)
            return
        now = self.clock()
        with self.store.transaction():
            if performed.keep is not None:
                self.store.upsert_resource(
                    performed.keep, effect.patient, performed.identifier, performed.base_version
                )
            self.store.complete_effect(effect.id, now, orjson.dumps(performed.result).decode())
        if performed.stored_on_ehr and effect.received_at is not None and self.metrics:
            self.metrics.stored(now - effect.received_at)

    def _retry(self, effect: Effect, message: str, after: float | None) -> None:
        attempts = effect.attempts + 1
        now = self.clock()
        if attempts >= self.policy.max_attempts:
            log.warning(
                "an effect (%s) failed %d times and is now a dead letter: %s",
                effect.kind,
                attempts,
                message,
            )
            self.store.dead_letter(effect.id, f"{message} (after {attempts} attempts)", now)
            return
        delay = self.policy.delay(attempts, after)
        log.info("an effect (%s) will be tried again in %.1f s: %s", effect.kind, delay, message)
        self.store.retry_effect(effect.id, message, now + delay)

    def _conflict(self, effect: Effect, conflict: Conflict) -> None:
        now = self.clock()
        with self.store.transaction():
            if conflict.current is not None and effect.patient is not None:
                identifier = decision_identifier(conflict.current)
                self.store.upsert_resource(conflict.current, effect.patient, identifier)
            if effect.patient is not None:
                key = f"conflict:{effect.id}:{now:.3f}"
                self.store.put_items([NewItem(key, "recheck", effect.patient, None, now)])
            self.store.complete_effect(
                effect.id, now, orjson.dumps({"conflict": str(conflict)}).decode()
            )
