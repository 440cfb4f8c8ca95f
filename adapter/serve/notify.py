"""``POST /notify`` and ``PUT /notify/{type}/{id}``: FHIR Subscription notifications (serve).

The HTTP edge of the notify source (`adapter.pipeline.notify`): the channel header secret is
checked (constant time; 401 without it), the body is read by the translator
(`adapter.subscriptions.notification`: a non-conformant notification gets 400/422 with an
OperationOutcome naming the FHIR path), and the answer is 200 only once what the notification
asked for is durable (the inbox, or a recorded re-query). The same notification sent again
answers 200 and has no second effect. The background job (Subscription maintenance, the
heartbeat watchdog, re-queries) runs while serve runs.
"""

from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from flask import Response, request

from adapter.errors import ConfigurationError, UnauthorizedError
from adapter.mappings_loader import load_reference_data
from adapter.pipeline.history import queries
from adapter.pipeline.notify import NotifyConfig, NotifySource
from adapter.serve.app import accepted, fhir_response
from adapter.serve.extensions import Extension, ServeContext
from adapter.subscriptions.notification import parse
from adapter.subscriptions.resources import SubscriptionPlan, TopicPlan

if TYPE_CHECKING:
    from flask import Flask

    from adapter.settings import Loaded

#: The adapter's own topic (created on the EHR with ``subscriptions.create_topic``).
ADAPTER_TOPIC = TopicPlan(
    url="https://rems-adapter.github.io/fhir/SubscriptionTopic/observation",
    resource_type="Observation",
    basic_id="rems-adapter-observation-topic",
)

log = logging.getLogger(__name__)


class Notifications(Extension):
    """The `/notify` routes and the Subscriptions job. `secret`: (header name, value) every
    notification must carry (the Subscriptions the adapter makes send it), or None."""

    name = "notify"

    def __init__(self, config: NotifyConfig, secret: tuple[str, str] | None = None) -> None:
        self.config = config
        self.secret = secret
        self.source: NotifySource | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def routes(self, app: Flask, context: ServeContext) -> None:
        pipeline = context.pipeline
        if pipeline.ehr is None:
            raise ConfigurationError(
                "Subscriptions need the EHR (fhir.base_url)", where="subscriptions.enabled"
            )
        source = NotifySource(
            pipeline.intake,
            pipeline.store,
            pipeline.ehr,
            pipeline.metrics,
            self.config,
            clock=pipeline.clock,
        )
        source.wake_event = self._wake
        self.source = source

        def receive(rtype: str | None = None, rid: str | None = None) -> Response:
            self._check_secret()
            notification = parse(
                request.get_data(cache=False), resource_type=rtype, resource_id=rid
            )
            outcome = source.accept(notification)
            # The answer is the same for the same notification again (interfaces.md s.4): what
            # this one changed goes to the log (counts only), not into the answer.
            log.debug(
                "notification %s: %d stored, re-query %s, %d missing",
                outcome.kind,
                outcome.stored,
                outcome.requery,
                outcome.missing,
            )
            return fhir_response(accepted(f"notification received ({outcome.kind})"), 200)

        app.add_url_rule("/notify", "notify", receive, methods=["POST"])
        app.add_url_rule(
            "/notify/<rtype>/<rid>", "notify_resource", receive, methods=["PUT", "POST"]
        )

    def _check_secret(self) -> None:
        if self.secret is None:
            return
        name, expected = self.secret
        presented = request.headers.get(name, "")
        if not hmac.compare_digest(presented.encode(), expected.encode()):
            raise UnauthorizedError(f"the notification secret ({name} header) is missing or wrong")

    def start(self, context: ServeContext) -> None:
        if self.source is None:
            return
        self._stop.clear()
        self._thread = threading.Thread(
            target=self.source.run, args=(self._stop, self._wake), name="notify", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
            self._thread = None
        if self.source is not None:
            self.source.close()


def _default_endpoint(loaded: Loaded) -> str:
    listen = loaded.settings.serve.listen
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        raise ConfigurationError(
            f"serve listens on {listen}: set the URL the EHR can reach",
            where="subscriptions.endpoint",
        )
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/notify"


def _header_value(value: str, where: str) -> str:
    if any(c in value for c in "\r\n\0") or not value.strip():
        raise ConfigurationError("not usable in an HTTP header", where=where)
    return value.strip()


def from_settings(loaded: Loaded) -> Notifications | None:
    """The extension ``[subscriptions]`` describes, or None when it is not enabled."""
    subs = loaded.settings.subscriptions
    if not subs.enabled:
        return None
    endpoint = subs.endpoint or _default_endpoint(loaded)
    if not endpoint.startswith(("http://", "https://")):
        raise ConfigurationError(
            "must be an http(s) URL", where=loaded.name("subscriptions.endpoint")
        )
    criteria = subs.observation_criteria
    if criteria is None:
        folder = loaded.settings.evaluation.mappings
        data = load_reference_data(Path(folder) if folder else None)
        observation = next(
            q
            for q in queries(data, loaded.settings.evaluation.derive_anc, use_include=False)
            if q.resource_type == "Observation"
        )
        criteria = "Observation?" + "&".join(f"{k}={v}" for k, v in observation.params)
    elif not criteria.startswith("Observation?"):
        raise ConfigurationError(
            "must be Observation?params", where=loaded.name("subscriptions.observation_criteria")
        )
    headers: list[str] = []
    token = loaded.settings.inbound.token
    if token is not None:  # serve's guard wants it on every request, notifications too
        headers.append(f"Authorization: Bearer {token.get_secret_value()}")
    check: tuple[str, str] | None = None
    if subs.secret is not None:
        name = _header_value(subs.secret_header, loaded.name("subscriptions.secret_header"))
        value = _header_value(subs.secret.get_secret_value(), loaded.name("subscriptions.secret"))
        headers.append(f"{name}: {value}")
        check = (name, value)
    topics: tuple[TopicPlan, ...] = ()
    topic = None
    if subs.kind == "backport":
        topic = subs.observation_topic or ADAPTER_TOPIC.url
        if subs.create_topic:
            topics = (TopicPlan(topic, "Observation", ADAPTER_TOPIC.basic_id),)
    elif subs.content == "id-only":
        raise ConfigurationError(
            "an R4 rest-hook has no id-only payload (full-resource or empty)",
            where=loaded.name("subscriptions.content"),
        )
    plan = SubscriptionPlan(
        kind=subs.kind,
        resource_type="Observation",
        endpoint=endpoint,
        criteria=criteria,
        topic=topic,
        content=subs.content,
        headers=tuple(headers),
        heartbeat_seconds=(subs.heartbeat_seconds or None) if subs.kind == "backport" else None,
    )
    config = NotifyConfig(
        plans=(plan,),
        topics=topics,
        overlap_seconds=subs.overlap_seconds,
        gap_grace_seconds=subs.gap_grace_seconds,
        maintain_interval_seconds=subs.maintain_seconds,
        fallback_interval_seconds=subs.fallback_seconds,
        manage=subs.manage,
    )
    return Notifications(config, check)
