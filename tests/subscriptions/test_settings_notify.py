"""``[subscriptions]`` -> the Subscription the adapter asks for (serve's composition)."""

from __future__ import annotations

from typing import Any

import pytest

from adapter.errors import ConfigurationError
from adapter.serve.command import EXTENSIONS
from adapter.serve.notify import ADAPTER_TOPIC, Notifications, from_settings
from adapter.settings import load_settings


def _loaded(environ: dict[str, str] | None = None, **sections: dict[str, Any]) -> Any:
    return load_settings(file_data=sections, environ=environ or {})


def test_disabled_by_default_and_registered_with_serve() -> None:
    assert from_settings(_loaded()) is None
    assert from_settings in EXTENSIONS


def test_rest_hook_defaults_come_from_the_listen_address_and_the_mappings() -> None:
    extension = from_settings(
        _loaded({"REMS_ADAPTER_SUBSCRIPTIONS_SECRET": "s3"}, subscriptions={"enabled": True})
    )
    assert isinstance(extension, Notifications)
    (plan,) = extension.config.plans
    assert plan.kind == "rest-hook" and plan.content == "full-resource"
    assert plan.endpoint == "http://127.0.0.1:8770/notify"
    assert plan.criteria is not None and plan.criteria.startswith("Observation?code=")
    assert "http://loinc.org|751-8" in plan.criteria  # an ANC code of mappings/lab-codes.toml
    assert "http://loinc.org|6690-2" in plan.criteria  # WBC: the ANC may be derived
    assert plan.headers == ("X-Rems-Adapter-Notify-Secret: s3",)
    assert extension.secret == ("X-Rems-Adapter-Notify-Secret", "s3")
    assert plan.heartbeat_seconds is None


def test_backport_with_the_adapters_topic_and_the_inbound_token() -> None:
    extension = from_settings(
        _loaded(
            {"REMS_ADAPTER_INBOUND_TOKEN": "tok"},
            subscriptions={
                "enabled": True,
                "kind": "backport",
                "create_topic": True,
                "content": "id-only",
                "heartbeat_seconds": 30,
                "endpoint": "https://adapter.example/notify",
                "observation_criteria": "Observation?code=http://loinc.org|751-8",
            },
        )
    )
    assert isinstance(extension, Notifications)
    (plan,) = extension.config.plans
    assert (plan.kind, plan.topic, plan.content, plan.heartbeat_seconds) == (
        "backport",
        ADAPTER_TOPIC.url,
        "id-only",
        30,
    )
    assert plan.headers == ("Authorization: Bearer tok",)  # serve's guard wants it
    assert extension.secret is None
    assert [t.url for t in extension.config.topics] == [ADAPTER_TOPIC.url]


@pytest.mark.parametrize(
    ("section", "environ", "where"),
    [
        ({"content": "id-only"}, {}, "subscriptions.content"),
        ({"observation_criteria": "Patient?x=1"}, {}, "subscriptions.observation_criteria"),
        ({"endpoint": "ftp://x/notify"}, {}, "subscriptions.endpoint"),
        ({}, {"REMS_ADAPTER_SUBSCRIPTIONS_SECRET": " "}, "REMS_ADAPTER_SUBSCRIPTIONS_SECRET"),
    ],
)
def test_unusable_settings_name_the_key(
    section: dict[str, Any], environ: dict[str, str], where: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        from_settings(_loaded(environ, subscriptions={"enabled": True, **section}))
    assert caught.value.where == where


def test_listening_on_every_address_needs_an_explicit_endpoint() -> None:
    with pytest.raises(ConfigurationError) as caught:
        from_settings(
            _loaded(
                {"REMS_ADAPTER_INBOUND_TOKEN": "t"},
                serve={"listen": "0.0.0.0:8770"},
                subscriptions={"enabled": True},
            )
        )
    assert caught.value.where == "subscriptions.endpoint"
