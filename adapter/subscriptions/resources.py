"""The resources a subscriber asks the EHR to hold, built from a plan (pure).

- An R4 rest-hook ``Subscription`` (criteria ``Type?params``; with payload the EHR sends the
  resource as ``PUT {endpoint}/{type}/{id}``, without it an empty ``POST``).
- A Subscriptions Backport ``Subscription`` (criteria = a topic canonical; filter criteria,
  payload content, heartbeat period as the IG's extensions).
- A backported ``SubscriptionTopic`` as an R4 ``Basic`` carrying the R5 cross-version
  ``extension-SubscriptionTopic.*`` extensions (the encoding servers such as sekmet-fhir read),
  for EHRs that accept topics from clients and have none for the results we need.

Every Subscription the adapter creates carries a ``meta.tag`` (`TAG_SYSTEM`) whose code is
derived from the plan, so the adapter finds its own among others' without a local list, and a
changed plan is a different Subscription.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

TAG_SYSTEM = "https://rems-adapter.github.io/fhir/CodeSystem/subscription"
BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
BACKPORT_PROFILE = f"{BACKPORT}/backport-subscription"
EXT_FILTER = f"{BACKPORT}/backport-filter-criteria"
EXT_CONTENT = f"{BACKPORT}/backport-payload-content"
EXT_HEARTBEAT = f"{BACKPORT}/backport-heartbeat-period"
EXT_TIMEOUT = f"{BACKPORT}/backport-timeout"
TOPIC_EXT = "http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic"
FHIR_JSON = "application/fhir+json"

Kind = Literal["rest-hook", "backport"]
Content = Literal["empty", "id-only", "full-resource"]


@dataclass(frozen=True)
class SubscriptionPlan:
    """One Subscription the adapter needs. `criteria`: ``Type?params`` (rest-hook: the
    criteria; backport: the filter criteria, optional). `topic`: the topic canonical (backport).
    `headers`: ``Name: value`` lines the EHR sends with every notification (the shared secret)."""

    kind: Kind
    resource_type: str
    endpoint: str
    criteria: str | None = None
    topic: str | None = None
    content: Content = "full-resource"
    headers: tuple[str, ...] = ()
    heartbeat_seconds: int | None = None
    timeout_seconds: int | None = None
    reason: str = "rems-adapter: clozapine ANC monitoring"

    def __post_init__(self) -> None:
        if self.kind == "rest-hook" and not self.criteria:
            raise ValueError("an R4 rest-hook Subscription needs criteria (Type?params)")
        if self.kind == "backport" and not self.topic:
            raise ValueError("a Backport Subscription needs a topic canonical")
        if self.criteria and not self.criteria.startswith(f"{self.resource_type}?"):
            raise ValueError(f"criteria must start with {self.resource_type}?")
        if self.kind == "rest-hook" and self.content == "id-only":
            raise ValueError("an R4 rest-hook has no id-only payload (empty or full-resource)")

    @property
    def key(self) -> str:
        """Stable code of this plan (the tag), independent of the secret's value: rotating the
        secret updates the Subscription in place rather than making a second one."""
        parts = [
            self.kind,
            self.resource_type,
            self.endpoint,
            self.criteria or "",
            self.topic or "",
            self.content,
            str(self.heartbeat_seconds or ""),
            ";".join(line.partition(":")[0].strip().lower() for line in self.headers),
        ]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def subscription(plan: SubscriptionPlan, status: str = "requested") -> dict[str, Any]:
    """The Subscription resource for `plan` (no id: the EHR assigns one)."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": plan.endpoint}
    if plan.headers:
        channel["header"] = list(plan.headers)
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": plan.key}]},
        "status": status,
        "reason": plan.reason,
    }
    if plan.kind == "rest-hook":
        resource["criteria"] = plan.criteria
        if plan.content != "empty":
            channel["payload"] = FHIR_JSON
    else:
        resource["meta"]["profile"] = [BACKPORT_PROFILE]
        resource["criteria"] = plan.topic
        if plan.criteria:
            resource["_criteria"] = {
                "extension": [{"url": EXT_FILTER, "valueString": plan.criteria}]
            }
        channel["payload"] = FHIR_JSON
        channel["_payload"] = {"extension": [{"url": EXT_CONTENT, "valueCode": plan.content}]}
        extensions = []
        if plan.heartbeat_seconds:
            extensions.append({"url": EXT_HEARTBEAT, "valueUnsignedInt": plan.heartbeat_seconds})
        if plan.timeout_seconds:
            extensions.append({"url": EXT_TIMEOUT, "valueUnsignedInt": plan.timeout_seconds})
        if extensions:
            channel["extension"] = extensions
    resource["channel"] = channel
    return resource


def is_ours(resource: Mapping[str, Any], plan: SubscriptionPlan) -> bool:
    """True when `resource` is the Subscription the adapter made for `plan` (its tag)."""
    meta = resource.get("meta")
    tags = meta.get("tag") if isinstance(meta, Mapping) else None
    return isinstance(tags, list) and any(
        isinstance(tag, Mapping) and tag.get("system") == TAG_SYSTEM and tag.get("code") == plan.key
        for tag in tags
    )


def needs_update(resource: Mapping[str, Any], plan: SubscriptionPlan) -> bool:
    """True when the EHR's copy no longer says what `plan` says (e.g. a rotated secret)."""
    wanted = subscription(plan)
    for name in ("criteria", "_criteria", "channel"):
        if resource.get(name) != wanted.get(name):
            return True
    return False


@dataclass(frozen=True)
class TopicPlan:
    """A topic for one resource type: every create and update, filterable by `filters`."""

    url: str
    resource_type: str
    basic_id: str
    title: str = "rems-adapter: results for clozapine monitoring"
    filters: tuple[str, ...] = ("code", "patient")
    interactions: tuple[str, ...] = ("create", "update")


def topic_basic(plan: TopicPlan) -> dict[str, Any]:
    """A backported SubscriptionTopic: an R4 Basic with the R5 cross-version extensions."""
    trigger: list[dict[str, Any]] = [
        {"url": "description", "valueMarkdown": f"A {plan.resource_type} was created or updated"},
        {
            "url": "resource",
            "valueUri": f"http://hl7.org/fhir/StructureDefinition/{plan.resource_type}",
        },
        *({"url": "supportedInteraction", "valueCode": i} for i in plan.interactions),
    ]
    return {
        "resourceType": "Basic",
        "id": plan.basic_id,
        "modifierExtension": [{"url": f"{TOPIC_EXT}.status", "valueCode": "active"}],
        "extension": [
            {"url": f"{TOPIC_EXT}.url", "valueUri": plan.url},
            {"url": f"{TOPIC_EXT}.version", "valueString": "1"},
            {"url": f"{TOPIC_EXT}.title", "valueString": plan.title},
            {"url": f"{TOPIC_EXT}.resourceTrigger", "extension": trigger},
            *(
                {
                    "url": f"{TOPIC_EXT}.canFilterBy",
                    "extension": [
                        {"url": "resource", "valueUri": plan.resource_type},
                        {"url": "filterParameter", "valueString": name},
                    ],
                }
                for name in plan.filters
            ),
        ],
        "code": {
            "coding": [{"system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic"}]
        },
    }


def topic_url_of(basic: Mapping[str, Any]) -> str | None:
    """The canonical URL of a backported topic (`Basic`), or None."""
    for extension in basic.get("extension") or []:
        if isinstance(extension, Mapping) and extension.get("url") == f"{TOPIC_EXT}.url":
            value = extension.get("valueUri") or extension.get("valueCanonical")
            return value if isinstance(value, str) else None
    return None
