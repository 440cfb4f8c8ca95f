"""The Subscriptions the adapter keeps on the EHR: create, maintain, ask ``$status`` / ``$events``.

What `SubscriptionKeeper.ensure` does, for every plan (`adapter.subscriptions.resources`):

- finds the adapter's own Subscription on the EHR (``Subscription?url={endpoint}``, then by the
  plan's ``meta.tag``: never someone else's);
- none (never made, or deleted): creates it (``status`` ``requested``; the EHR activates it,
  after a handshake for Backport);
- one the EHR turned ``error`` or ``off`` (deliveries failed, an end date passed): asks for it
  again with ``status`` ``requested`` (an R4 server re-activates it); when it is still
  ``error``/``off`` the next time, makes a new one and turns the old one ``off``, so the EHR never
  notifies twice. Once replaced, a plan is only asked for again (never replaced a second time)
  until one of its Subscriptions is seen live: a subscriber down for hours leaves two
  Subscriptions on the EHR, not one per check;
- one whose channel or criteria no longer match the plan (a rotated secret): updates it.

Topics (`TopicPlan`) are created as backported ``Basic`` resources when configured, for EHRs that
accept topics from clients (sekmet-fhir has none for Observations).

``$status`` is read where the EHR offers it; ``$events`` too (IG 1.1.0+): an EHR that answers it
with 404/400/405/501 does not offer it, which the keeper remembers (`events_supported`), so the
caller recovers from its watermark instead.

The only module of Subscriptions that sees HTTP; failures are `adapter.ehr.errors` types.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from adapter.errors import UnprocessableError
from adapter.subscriptions.notification import (
    Backport,
    parse_backport,
    parse_status_bundle,
)
from adapter.subscriptions.resources import (
    SubscriptionPlan,
    TopicPlan,
    is_ours,
    needs_update,
    subscription,
    topic_basic,
    topic_url_of,
)

from .client import FhirClient
from .errors import FhirNotFoundError, FhirResponseError, FhirServerError

log = logging.getLogger(__name__)

Action = Literal["kept", "created", "updated", "reactivated", "recreated"]
#: An answer meaning "this server has no such operation".
_NOT_OFFERED = (400, 404, 405, 501)
#: How many times a Subscription the EHR disabled is asked for again before it is replaced.
REACTIVATIONS_BEFORE_RECREATE = 1
_DISABLED = ("error", "off")


@dataclass(frozen=True)
class Kept:
    """One plan after `ensure`: the EHR's Subscription id and status, and what was done."""

    plan: SubscriptionPlan
    subscription_id: str
    status: str
    action: Action
    previous_status: str | None = None
    last_updated: str | None = None  # the server's meta.lastUpdated of the Subscription


def _updated(resource: dict[str, Any]) -> str | None:
    meta = resource.get("meta")
    value = meta.get("lastUpdated") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


class SubscriptionKeeper:
    """Keeps `plans` alive on the EHR behind `client`."""

    def __init__(
        self,
        client: FhirClient,
        plans: Sequence[SubscriptionPlan],
        topics: Sequence[TopicPlan] = (),
    ) -> None:
        self.client = client
        self.plans = tuple(plans)
        self.topics = tuple(topics)
        self.events_supported: bool | None = None  # None: not tried yet
        self._reactivated: dict[str, int] = {}
        #: plans replaced since last seen live: not replaced again until one is (an outage of
        #: the subscriber must not leave a trail of Subscriptions on the EHR)
        self._replaced: set[str] = set()

    # -- topics --------------------------------------------------------------------------------

    def ensure_topics(self) -> list[str]:
        """Create (PUT, update-as-create) every configured topic the EHR lacks; their URLs."""
        made = []
        for plan in self.topics:
            try:
                current = self.client.read("Basic", plan.basic_id)
            except FhirNotFoundError:
                current = None
            if current is not None and topic_url_of(current) == plan.url:
                continue
            self.client.update(topic_basic(plan))
            log.info("created backported SubscriptionTopic %s (Basic/%s)", plan.url, plan.basic_id)
            made.append(plan.url)
        return made

    # -- subscriptions -------------------------------------------------------------------------

    def find(self, plan: SubscriptionPlan) -> list[dict[str, Any]]:
        """The adapter's own Subscriptions for `plan` on the EHR (newest first)."""
        result = self.client.search("Subscription", {"url": plan.endpoint}, strict=False)
        ours = [s for s in result.matches if is_ours(s, plan)]
        ours.sort(key=lambda s: str((s.get("meta") or {}).get("lastUpdated", "")), reverse=True)
        return ours

    def ensure(self) -> list[Kept]:
        """One maintenance pass over every plan (see the module docstring)."""
        return [self._ensure(plan) for plan in self.plans]

    def _ensure(self, plan: SubscriptionPlan) -> Kept:
        ours = self.find(plan)
        live = [s for s in ours if s.get("status") not in _DISABLED]
        if live:
            current = live[0]
            for extra in live[1:]:  # e.g. two adapters raced: keep one channel open
                self._turn_off(extra)
            if needs_update(current, plan):
                updated = self.client.update({**subscription(plan), "id": current["id"]})
                log.info("updated Subscription/%s (plan changed)", current["id"])
                return Kept(
                    plan,
                    current["id"],
                    str(updated.get("status")),
                    "updated",
                    None,
                    _updated(updated),
                )
            self._reactivated.pop(str(current["id"]), None)
            self._replaced.discard(plan.key)
            return Kept(
                plan, current["id"], str(current.get("status")), "kept", None, _updated(current)
            )
        if ours:
            disabled = ours[0]
            sid = str(disabled["id"])
            previous = str(disabled.get("status"))
            asked = self._reactivated.get(sid, 0)
            if asked < REACTIVATIONS_BEFORE_RECREATE or plan.key in self._replaced:
                self._reactivated[sid] = self._reactivated.get(sid, 0) + 1
                updated = self.client.update({**subscription(plan, "requested"), "id": sid})
                log.warning("Subscription/%s was %s on the EHR; asked for it again", sid, previous)
                return Kept(
                    plan,
                    sid,
                    str(updated.get("status")),
                    "reactivated",
                    previous,
                    _updated(updated),
                )
            for old in ours:
                if old.get("status") != "off":
                    self._turn_off(old)
            created = self.client.create(subscription(plan))
            self._reactivated.pop(sid, None)
            self._replaced.add(plan.key)
            log.warning(
                "Subscription/%s stayed %s; replaced by Subscription/%s",
                sid,
                previous,
                created.get("id"),
            )
            return Kept(
                plan,
                str(created["id"]),
                str(created.get("status")),
                "recreated",
                previous,
                _updated(created),
            )
        created = self.client.create(subscription(plan))
        log.info(
            "created Subscription/%s (%s, %s)", created.get("id"), plan.kind, plan.resource_type
        )
        return Kept(
            plan, str(created["id"]), str(created.get("status")), "created", None, _updated(created)
        )

    def _turn_off(self, resource: dict[str, Any]) -> None:
        meta = resource.get("meta") or {}
        body = {k: v for k, v in resource.items() if k != "meta"}
        body["meta"] = {"tag": meta.get("tag", [])}
        body["status"] = "off"
        self.client.update(body)
        log.info("turned Subscription/%s off (superseded)", resource.get("id"))

    # -- $status and $events -------------------------------------------------------------------

    def _operation(
        self, subscription_id: str, name: str, params: list[tuple[str, str]]
    ) -> dict[str, Any] | None:
        url = self.client._url("Subscription", subscription_id, name)
        try:
            response = self.client._request("GET", url, idempotent=True, params=params)
        except FhirServerError as exc:
            if exc.status in _NOT_OFFERED:
                return None
            raise
        return self.client._json(response, "GET", url)

    def _parsed(self, body: dict[str, Any], name: str, read: Any) -> Any:
        try:
            return read(body)
        except UnprocessableError as exc:  # the EHR answered something unusable: upstream
            raise FhirResponseError(
                f"{name} answered a non-conformant Bundle ({', '.join(exc.expression) or exc})",
                method="GET",
                url=self.client.base_url,
                status=200,
            ) from exc

    def status(self, subscription_id: str) -> Backport | None:
        """``Subscription/{id}/$status``: the EHR's count of events and the status, or None when
        the EHR has no such operation."""
        body = self._operation(subscription_id, "$status", [])
        if body is None:
            return None
        statuses: tuple[Backport, ...] = self._parsed(body, "$status", parse_status_bundle)
        if not statuses:
            raise FhirResponseError(
                "$status answered no status", method="GET", url=self.client.base_url, status=200
            )
        return statuses[0]

    def events(self, subscription_id: str, first: int, last: int) -> Backport | None:
        """``Subscription/{id}/$events`` for event numbers `first`..`last`: a notification
        Bundle (``query-event``) with their focus, or None when the EHR does not offer it."""
        if self.events_supported is False:
            return None
        params = [("eventsSinceNumber", str(first)), ("eventsUntilNumber", str(last))]
        body = self._operation(subscription_id, "$events", params)
        if body is None:
            self.events_supported = False
            log.info("the EHR has no Subscription/$events; gaps are recovered from the watermark")
            return None
        self.events_supported = True
        answer: Backport = self._parsed(body, "$events", parse_backport)
        return answer
