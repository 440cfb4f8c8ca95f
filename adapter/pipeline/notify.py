"""The notify source: FHIR Subscription notifications -> the inbox, checked against the EHR.

Notifications are hints. What each kind leads to (`NotifySource.accept`, called by the HTTP
route before it answers; when it returns, what the notification asked for is durable):

- R4 rest-hook with the resource, Backport ``full-resource``: the resource goes to the inbox
  (key ``notify:Type/id/_history/version|lastUpdated``: a replay is one item; the same version
  also polled is decided again with no second effect, DetectedIssues being deterministic).
- R4 rest-hook ``PUT`` without body, Backport ``id-only``: the focus is read from the EHR (only
  from the EHR's own base URL: a focus elsewhere is never followed) and goes to the inbox.
- Empty rest-hook ``POST``, Backport ``empty`` (or a focus that cannot be read now): a re-query
  from the watermark is recorded durably ("go and look") and done by the background job.
- Backport handshake, heartbeat, query-status: the subscription was heard from (watchdog), and
  its count is checked for gaps.

Gaps (`adapter.subscriptions.gaps`): event numbers not received wait `gap_grace_seconds` (an
event sent out of order cancels its wait), then are recovered with ``$events`` when the EHR
offers it, otherwise by the same durable re-query; what waits is kept in the state store. The
EHR's ``$status`` is asked at each maintenance and when a Subscription goes silent: its count
reveals the last events lost. A Subscription silent for more than twice its heartbeat period
(`adapter.subscriptions.watchdog`) falls back to polling (a re-query every
`fallback_interval_seconds`), says so in ``rems_adapter_subscription_silent`` and the log, and
stops once it is heard again. `maintain` keeps the Subscriptions on the EHR
(`adapter.ehr.subscriptions.SubscriptionKeeper`): a notification reporting ``error`` or ``off``
makes it run at once.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from typing import Any
from urllib.parse import parse_qsl

from prometheus_client import Counter, Gauge

from adapter.ehr import FhirClient, FhirError, FhirNotFoundError
from adapter.ehr.subscriptions import Kept, SubscriptionKeeper
from adapter.fhir.values import read_instant_or_none
from adapter.pipeline.intake import Arrival, Intake, content_key
from adapter.pipeline.metrics import Metrics
from adapter.store import Store
from adapter.subscriptions.gaps import Progress, Span, Waiting, due, observe, settle
from adapter.subscriptions.notification import Backport, Event, Notification, Reference, RestHook
from adapter.subscriptions.resources import SubscriptionPlan, TopicPlan
from adapter.subscriptions.watchdog import Watch

log = logging.getLogger(__name__)

SOURCE = "notify"
_REQUESTED = "notify:requery:requested"
_DONE = "notify:requery:done"


def version_key(resource: dict[str, Any]) -> str:
    """``notify:Type/id/_history/version|lastUpdated``: the inbox key of a notified resource, the
    poll source's shape (``poll:...``), so one version notified again, or found again by a
    re-query, is one item. Without versionId nor lastUpdated: a digest of the content."""
    meta = resource.get("meta") if isinstance(resource.get("meta"), dict) else {}
    version = meta.get("versionId") if isinstance(meta, dict) else None
    updated = meta.get("lastUpdated") if isinstance(meta, dict) else None
    kind, rid = resource.get("resourceType"), resource.get("id")
    if not isinstance(kind, str) or not isinstance(rid, str):
        return content_key(resource)
    version = version if isinstance(version, str) else ""
    updated = updated if isinstance(updated, str) else ""
    if not version and not updated:
        return f"notify:{content_key(resource)}"
    return f"{SOURCE}:{kind}/{rid}/_history/{version}|{updated}"


@dataclass(frozen=True)
class NotifyConfig:
    """What the notify source needs (built from ``[subscriptions]`` by serve)."""

    plans: tuple[SubscriptionPlan, ...] = ()
    topics: tuple[TopicPlan, ...] = ()
    resource_types: tuple[str, ...] = ("Observation",)
    overlap_seconds: float = 120.0
    page_size: int = 1000
    max_pages: int = 100
    maintain_interval_seconds: float = 60.0
    fallback_interval_seconds: float = 60.0
    #: how long a missing event may still arrive (sent out of order) before it is recovered
    gap_grace_seconds: float = 5.0
    manage: bool = True


@dataclass(frozen=True)
class Accepted:
    """What one notification led to (for the HTTP answer and the tests)."""

    kind: str
    stored: int = 0
    requery: bool = False
    missing: int = 0
    notes: tuple[str, ...] = ()


@dataclass
class _Subscription:
    progress: Progress
    waiting: tuple[Waiting, ...] = ()
    watch: Watch | None = None
    silent: bool = False
    last_fallback: float = 0.0


class _Metrics:
    def __init__(self, metrics: Metrics) -> None:
        registry = metrics.registry
        self.notifications = Counter(
            "rems_adapter_notifications",
            "Subscription notifications received, by kind",
            ["kind"],
            registry=registry,
        )
        self.gaps = Counter(
            "rems_adapter_subscription_missing_events",
            "Backport events found missing (gaps), recovered by $events or a re-query",
            registry=registry,
        )
        self.silent = Gauge(
            "rems_adapter_subscription_silent",
            "Subscriptions silent for more than 2 heartbeat periods (polled instead)",
            registry=registry,
        )
        self.fallbacks = Counter(
            "rems_adapter_subscription_fallbacks",
            "Times a silent Subscription made the adapter fall back to polling",
            registry=registry,
        )
        self.requeries = Counter(
            "rems_adapter_notify_requeries",
            "Re-queries from the watermark (empty notifications, gaps, silent subscriptions)",
            registry=registry,
        )
        self.maintained = Counter(
            "rems_adapter_subscriptions_maintained",
            "Subscription maintenance actions on the EHR, by action",
            ["action"],
            registry=registry,
        )


@dataclass
class NotifySource:
    """See the module docstring. `ehr` makes an EHR client (one per thread)."""

    intake: Intake
    store: Store
    ehr: Callable[[], FhirClient]
    metrics: Metrics
    config: NotifyConfig = field(default_factory=NotifyConfig)
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._subs: dict[str, _Subscription] = {}
        self._sid_locks: dict[str, threading.Lock] = {}
        self._m = _Metrics(self.metrics)
        self._maintain_now = threading.Event()
        self._local = threading.local()
        self._keeper: SubscriptionKeeper | None = None
        self._clients: list[FhirClient] = []
        self.events_supported: bool | None = None  # the EHR's $events: None = not tried yet
        self.kept: list[Kept] = []
        self._last_maintained = 0.0

    # ------------------------------------------------------------------ the EHR

    def _client(self) -> FhirClient:
        client: FhirClient | None = getattr(self._local, "client", None)
        if client is None:
            client = self.ehr()
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def keeper(self) -> SubscriptionKeeper:
        """The keeper of the background job (its own client: one thread uses it)."""
        if self._keeper is None:
            client = self.ehr()
            with self._lock:
                self._clients.append(client)
            self._keeper = SubscriptionKeeper(client, self.config.plans, self.config.topics)
        return self._keeper

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close()

    # ------------------------------------------------------------------ receiving

    def accept(self, notification: Notification) -> Accepted:
        """Make what `notification` asks for durable (the caller then answers 2xx)."""
        if isinstance(notification, RestHook):
            return self._rest_hook(notification)
        return self._backport(notification)

    def _rest_hook(self, hook: RestHook) -> Accepted:
        self._m.notifications.labels("rest-hook").inc()
        if hook.resource is not None:
            return Accepted("rest-hook", stored=self._store([dict(hook.resource)]))
        if hook.resource_type is not None and hook.resource_id is not None:
            resource = self._read(Reference(hook.resource_type, hook.resource_id))
            if resource is not None:
                return Accepted("rest-hook", stored=self._store([resource]))
        self._request_requery()
        return Accepted("rest-hook", requery=True)

    def _backport(self, note: Backport, *, heard: bool = True) -> Accepted:
        if heard:
            self._m.notifications.labels(note.type).inc()
        sid = note.subscription_id or note.subscription
        resources: list[dict[str, Any]] = []
        requery = False
        for event in note.events:
            found, unknown = self._resource_of(event)
            requery = requery or unknown
            if found is not None:
                resources.append(found)
        with self._sid_lock(sid):  # one notification of a Subscription at a time
            return self._account(note, sid, resources, requery, heard)

    def _sid_lock(self, sid: str) -> threading.Lock:
        with self._lock:
            return self._sid_locks.setdefault(sid, threading.Lock())

    def _account(
        self,
        note: Backport,
        sid: str,
        resources: list[dict[str, Any]],
        requery: bool,
        heard: bool = True,
    ) -> Accepted:
        notes: list[str] = []
        now = self.clock()
        with self._lock:
            entry = self._entry(sid)
            step = observe(
                entry.progress,
                note.numbers,
                note.events_since_start,
                handshake=note.type == "handshake",
            )
            waiting = () if step.restarted else settle(entry.waiting, note.numbers)
            if heard and entry.watch is not None:
                entry.watch = entry.watch.heard(now)
                if entry.silent:
                    entry.silent = False
                    self._m.silent.dec()
                    log.warning("Subscription/%s is heard from again; polling fallback ends", sid)
        if step.restarted:
            notes.append("the server's event numbering restarted")
        grace = self.config.gap_grace_seconds
        now_spans: list[Span] = []
        if step.missing and grace > 0:
            waiting += tuple(Waiting(a, b, now + grace) for a, b in step.missing)
            log.info(
                "Subscription/%s: %d event(s) not received (%s); recovered in %.0f s unless "
                "they arrive",
                sid,
                step.missing_count,
                _spans(step.missing),
                grace,
            )
        elif step.missing:
            now_spans = list(step.missing)
        recovered, incomplete = self._recover_spans(sid, now_spans)
        with self.store.transaction():
            stored = self._store([*resources, *recovered])
            self._save(sid, step.progress.mark, waiting)
            if requery or incomplete:
                self._request_requery()
        with self._lock:
            entry = self._entry(sid)
            entry.progress = step.progress
            entry.waiting = waiting
        if note.status in ("error", "off") or note.errors:
            notes.append(f"the EHR reports the Subscription {note.status}")
            self._maintain_now.set()
        return Accepted(note.type, stored, requery or incomplete, step.missing_count, tuple(notes))

    def _recover_spans(self, sid: str, spans: Sequence[Span]) -> tuple[list[dict[str, Any]], bool]:
        if not spans:
            return [], False
        count = sum(b - a + 1 for a, b in spans)
        self._m.gaps.inc(count)
        log.warning(
            "Subscription/%s: %d event(s) missing (%s); recovering", sid, count, _spans(spans)
        )
        return self._recover(sid, spans)

    def _save(self, sid: str, mark: int, waiting: Sequence[Waiting]) -> None:
        value = {"mark": mark, "waiting": [[w.first, w.last, w.due] for w in waiting]}
        self.store.set_watermark(f"notify:events:{sid}", json.dumps(value))

    def recover_due(self) -> int:
        """Recover the missing events whose grace has passed; how many."""
        now = self.clock()
        total = 0
        with self._lock:
            sids = [sid for sid, entry in self._subs.items() if entry.waiting]
        for sid in sids:
            with self._sid_lock(sid):
                with self._lock:
                    entry = self._entry(sid)
                    ready, still = due(entry.waiting, now)
                    mark = entry.progress.mark
                if not ready:
                    continue
                spans = [(w.first, w.last) for w in ready]
                recovered, incomplete = self._recover_spans(sid, spans)
                with self.store.transaction():
                    self._store(recovered)
                    self._save(sid, mark, still)
                    if incomplete:
                        self._request_requery()
                with self._lock:
                    entry.waiting = still
                total += sum(b - a + 1 for a, b in spans)
        return total

    def _entry(self, sid: str) -> _Subscription:
        entry = self._subs.get(sid)
        if entry is None:
            mark, waiting = _load(self.store.watermark(f"notify:events:{sid}"))
            entry = _Subscription(Progress(sid, mark), waiting)
            period = self._heartbeat_of(sid)
            if period:
                entry.watch = Watch(sid, period, self.clock())
            self._subs[sid] = entry
        return entry

    def _heartbeat_of(self, sid: str) -> float | None:
        for kept in self.kept:
            if kept.subscription_id == sid and kept.plan.heartbeat_seconds:
                return float(kept.plan.heartbeat_seconds)
        return None

    def _resource_of(self, event: Event) -> tuple[dict[str, Any] | None, bool]:
        """The event's resource (carried, or read from the EHR), and whether only a re-query
        can tell what happened (empty content, a focus that cannot be read now). A focus of a
        type the adapter does not decide on is (None, False): nothing to take."""
        if event.resource is not None:
            return dict(event.resource), False
        if event.focus is None:
            return None, True
        if event.focus.resource_type not in self.config.resource_types:
            return None, False
        resource = self._read(event.focus)
        return resource, resource is None

    def _read(self, ref: Reference) -> dict[str, Any] | None:
        client = self._client()
        if ref.base is not None and ref.base.rstrip("/") != client.base_url:
            log.warning(
                "a notification names a %s on another server; not followed", ref.resource_type
            )
            return None
        try:
            return client.read(ref.resource_type, ref.id)
        except FhirNotFoundError:
            log.info("a notified %s is gone from the EHR; nothing to do", ref.resource_type)
            return None
        except (FhirError, ValueError) as exc:
            self.metrics.upstream_error("ehr")
            log.warning(
                "reading a notified %s failed (%s); re-query instead", ref.resource_type, exc
            )
            return None

    def _recover(
        self, sid: str, missing: Sequence[tuple[int, int]]
    ) -> tuple[list[dict[str, Any]], bool]:
        """Resources of the missing events via ``$events``; True when a re-query is needed."""
        # this thread's client ($events runs in the request thread); what the EHR offers is
        # remembered across calls
        keeper = SubscriptionKeeper(self._client(), ())
        keeper.events_supported = self.events_supported
        found: list[dict[str, Any]] = []
        try:
            for first, last in missing:
                answer = keeper.events(sid, first, last)
                self.events_supported = keeper.events_supported
                if answer is None:
                    return found, True
                for event in answer.events:
                    resource, unknown = self._resource_of(event)
                    if unknown:
                        return found, True
                    if resource is not None:
                        found.append(resource)
        except FhirError as exc:
            self.metrics.upstream_error("ehr")
            log.warning("$events failed (%s); re-query instead", exc)
            return found, True
        return found, False

    def _store(self, resources: Sequence[dict[str, Any]]) -> int:
        wanted = [r for r in resources if r.get("resourceType") in self.config.resource_types]
        if not wanted:
            return 0
        receipts = self.intake.receive(
            [Arrival(r, source=SOURCE, key=version_key(r)) for r in wanted]
        )
        return sum(1 for r in receipts if r.new)

    def _request_requery(self) -> None:
        self.store.set_watermark(_REQUESTED, repr(self.clock()))
        self._wake()

    def _wake(self) -> None:
        event: threading.Event | None = getattr(self, "wake_event", None)
        if event is not None:
            event.set()

    # ------------------------------------------------------------------ background

    def requery_pending(self) -> bool:
        requested = self.store.watermark(_REQUESTED)
        return requested is not None and requested != self.store.watermark(_DONE)

    def requery(self) -> int:
        """Search every plan's criteria from its watermark (minus the overlap); every match goes
        to the inbox. Returns how many were new."""
        requested = self.store.watermark(_REQUESTED)
        self._m.requeries.inc()
        new = 0
        for plan in self.config.plans:
            new += self._requery(plan)
        if requested is not None:
            self.store.set_watermark(_DONE, requested)
        return new

    def _requery(self, plan: SubscriptionPlan) -> int:
        kind, _, query = (plan.criteria or f"{plan.resource_type}?").partition("?")
        params = [*parse_qsl(query, keep_blank_values=False), ("_sort", "_lastUpdated")]
        name = f"notify:since:{plan.key}"
        since = self.store.watermark(name)
        if since is not None:
            params.append(("_lastUpdated", f"ge{_minus(since, self.config.overlap_seconds)}"))
        newest = since
        new = 0
        client = self._client()
        for page in client.search_pages(
            kind, params, count=self.config.page_size, max_pages=self.config.max_pages
        ):
            matches = [
                e["resource"]
                for e in page.get("entry") or []
                if isinstance(e, dict)
                and isinstance(e.get("resource"), dict)
                and e["resource"].get("resourceType") == kind
            ]
            for resource in matches:
                updated = (resource.get("meta") or {}).get("lastUpdated")
                if isinstance(updated, str) and _later(updated, newest):
                    newest = updated
            with self.store.transaction():
                new += self._store(matches)
                if newest is not None:
                    self.store.set_watermark(name, newest)
        return new

    def start_watermarks(self) -> None:
        """A plan's re-query starts where its Subscription starts (the server's lastUpdated of
        it), unless it already has a watermark."""
        for kept in self.kept:
            name = f"notify:since:{kept.plan.key}"
            if self.store.watermark(name) is None and kept.last_updated:
                self.store.set_watermark(name, kept.last_updated)

    def maintain(self) -> list[Kept]:
        keeper = self.keeper()
        keeper.ensure_topics()
        kept = keeper.ensure()
        for item in kept:
            self._m.maintained.labels(item.action).inc()
        self.kept = kept
        self.start_watermarks()
        if any(item.action in ("reactivated", "recreated") for item in kept):
            # what happened while the Subscription was disabled was never notified: go and look
            self._request_requery()
        with self._lock:
            current = {item.subscription_id for item in kept}
            for sid, entry in self._subs.items():
                if sid not in current and entry.watch is not None:
                    entry.watch = None  # replaced or gone: its silence means nothing now
                    if entry.silent:
                        entry.silent = False
                        self._m.silent.dec()
            for item in kept:
                entry = self._entry(item.subscription_id)
                if entry.watch is None and item.plan.heartbeat_seconds:
                    entry.watch = Watch(
                        item.subscription_id, float(item.plan.heartbeat_seconds), self.clock()
                    )
        self._last_maintained = self.clock()
        for item in kept:
            if item.plan.kind == "backport":
                self.check_status(item.subscription_id)
        return kept

    def check_status(self, sid: str) -> Accepted | None:
        """Ask the EHR for ``$status``: its count of events shows those lost last (no later
        notification would reveal them), and its status an error. Not a sign of life of the
        channel (the watchdog is not reset). None when the EHR has no ``$status``."""
        try:
            status = SubscriptionKeeper(self._client(), ()).status(sid)
        except FhirError as exc:
            self.metrics.upstream_error("ehr")
            log.warning("Subscription/%s: $status failed (%s)", sid, exc)
            return None
        if status is None:
            return None
        return self._backport(status, heard=False)

    def check_silence(self, newly: bool = False) -> list[str]:
        """Subscriptions silent for more than 2 heartbeat periods (the watchdog); each one's
        first silence is logged and counted, and a re-query is due every fallback interval.
        `newly`: only those whose silence began now."""
        now = self.clock()
        silent = []
        began = []
        due = False
        with self._lock:
            for sid, entry in self._subs.items():
                if entry.watch is None or not entry.watch.is_silent(now):
                    continue
                silent.append(sid)
                if not entry.silent:
                    began.append(sid)
                    entry.silent = True
                    self._m.silent.inc()
                    self._m.fallbacks.inc()
                    self._maintain_now.set()  # ask the EHR: $status, re-activate if disabled
                    log.warning(
                        "Subscription/%s silent for %.0f s (heartbeat every %.0f s): "
                        "falling back to polling until it is heard again",
                        sid,
                        entry.watch.silent_for(now),
                        entry.watch.heartbeat_seconds,
                    )
                if now - entry.last_fallback >= self.config.fallback_interval_seconds:
                    entry.last_fallback = now
                    due = True
        if due:
            self._request_requery()
        return began if newly else silent

    def run(self, stop: threading.Event, wake: threading.Event | None = None) -> None:
        """The background job: maintenance, the watchdog, and the re-queries asked for."""
        self.wake_event = wake or threading.Event()
        while not stop.is_set():
            try:
                if self.config.manage and (
                    self._maintain_now.is_set()
                    or self.clock() - self._last_maintained >= self.config.maintain_interval_seconds
                ):
                    self._maintain_now.clear()
                    self.maintain()
                for sid in self.check_silence(newly=True):
                    self.check_status(sid)
                self.recover_due()
                if self.requery_pending():
                    self.requery()
            except FhirError as exc:
                self.metrics.upstream_error("ehr")
                log.warning("Subscriptions: the EHR failed (%s); trying again", exc)
                stop.wait(5.0)
            except Exception as exc:  # the job keeps going; the error is logged by type only
                log.error("Subscriptions job failed: %s", type(exc).__name__)
                stop.wait(5.0)
            self.wake_event.wait(1.0)
            self.wake_event.clear()


def _spans(spans: Sequence[Span]) -> str:
    return ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans)


def _load(raw: str | None) -> tuple[int, tuple[Waiting, ...]]:
    """A Subscription's saved progress: its mark and what waits for recovery."""
    if raw is None:
        return 0, ()
    try:
        value = json.loads(raw)
        if isinstance(value, int):
            return value, ()
        waiting = tuple(Waiting(int(a), int(b), float(d)) for a, b, d in value["waiting"])
        return int(value["mark"]), waiting
    except (ValueError, TypeError, KeyError):
        return 0, ()


def _minus(raw: str, seconds: float) -> str:
    moment = read_instant_or_none(raw)
    if moment is None or seconds <= 0:
        return raw
    moment = (moment - timedelta(seconds=seconds)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _later(candidate: str, than: str | None) -> bool:
    if than is None:
        return True
    a, b = read_instant_or_none(candidate), read_instant_or_none(than)
    if a is not None and b is not None:
        return a > b
    return candidate > than
