"""serve receiving real notifications from stock sekmet-fhir 0.1.1 on 127.0.0.1, polling off:
a new low ANC becomes a DetectedIssue through the notification alone (R4 rest-hook and the
Backport); a lost notification is recovered; a Subscription the server disabled is re-activated;
a silent Subscription falls back to polling; non-conformant or unauthenticated notifications get
4xx OperationOutcomes; a replay has one effect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from adapter.subscriptions.resources import SubscriptionPlan
from tests.serve.kit import codes, issues, lab_result, recent_history, seed
from tests.subscriptions.conftest import QuickSekmet
from tests.subscriptions.kit import (
    ANC,
    SECRET_HEADER,
    TOPIC,
    NotifyServe,
    secret_headers,
    subscriptions,
    wait_for,
)
from tests.subscriptions.proxy import LossyProxy

pytestmark = pytest.mark.integration

HEADER = f"{SECRET_HEADER}: notify-secret-for-tests"


def rest_hook(content: str = "full-resource"):
    return lambda endpoint: (
        SubscriptionPlan(
            "rest-hook", "Observation", endpoint, criteria=ANC, content=content, headers=(HEADER,)
        ),
    )


def backport(content: str = "id-only", heartbeat: int | None = None):
    return lambda endpoint: (
        SubscriptionPlan(
            "backport",
            "Observation",
            endpoint,
            criteria=ANC,
            topic=TOPIC.url,
            content=content,
            headers=(HEADER,),
            heartbeat_seconds=heartbeat,
        ),
    )


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[NotifyServe]]:
    running: list[NotifyServe] = []
    yield running
    for serve in running:
        serve.stop()


def start(
    running: list[NotifyServe], ehr: QuickSekmet, tmp_path: Path, **kwargs: Any
) -> NotifyServe:
    serve = NotifyServe(ehr.base_url, tmp_path / "state.sqlite", **kwargs).start()
    running.append(serve)
    return serve


def active(ehr: QuickSekmet, endpoint: str) -> list[dict[str, Any]]:
    return [s for s in subscriptions(ehr.base_url, endpoint) if s.get("status") == "active"]


def patient_of(ids: dict[str, str]) -> str:
    return next(v for v in ids.values() if v.startswith("Patient/"))


def create(ehr: QuickSekmet, resource: dict[str, Any]) -> dict[str, Any]:
    answer = requests.post(f"{ehr.base_url}/Observation", json=resource, timeout=10)
    assert answer.status_code == 201, answer.text[:300]
    return answer.json()


def decided(ehr: QuickSekmet, patient: str, code: str, timeout: float = 60.0) -> list[str]:
    return wait_for(
        lambda: (found := codes(issues(ehr.base_url, patient))) and code in found and found,
        timeout,
        f"{code} for the patient",
    )


@pytest.mark.parametrize("content", ["full-resource", "empty"])
def test_rest_hook_a_new_low_anc_becomes_a_detected_issue(
    ehr: QuickSekmet, tmp_path: Path, started: list[NotifyServe], content: str
) -> None:
    patient = patient_of(seed(ehr.base_url, [recent_history([2100, 2000, 1900])]))
    serve = start(started, ehr, tmp_path, plans=rest_hook(content))
    wait_for(lambda: active(ehr, f"{serve.url}/notify"), what="an active Subscription")
    created = create(ehr, lab_result(patient, 1200))
    assert decided(ehr, patient, "anc-mild-neutropenia") == ["anc-mild-neutropenia"]
    assert serve.metric("rems_adapter_results_received_total", '{source="notify"}') >= 1
    assert serve.metric("rems_adapter_results_received_total", '{source="poll"}') == 0
    if content == "full-resource":
        # the same notification again answers 200 and has no second effect
        again = requests.put(
            f"{serve.url}/notify/Observation/{created['id']}",
            data=json.dumps(requests.get(f"{ehr.base_url}/Observation/{created['id']}").json()),
            headers=secret_headers(),
            timeout=10,
        )
        assert again.status_code == 200, again.text
        wait_for(lambda: serve.service.store.inbox_depth() == 0, what="inbox empty")
        assert codes(issues(ehr.base_url, patient)) == ["anc-mild-neutropenia"]


def test_backport_id_only_a_new_low_anc_becomes_a_detected_issue(
    ehr: QuickSekmet, tmp_path: Path, started: list[NotifyServe]
) -> None:
    patient = patient_of(seed(ehr.base_url, [recent_history([2100, 2000, 1900])]))
    serve = start(started, ehr, tmp_path, plans=backport("id-only"), topics=(TOPIC,))
    wait_for(lambda: active(ehr, f"{serve.url}/notify"), what="handshake accepted: active")
    create(ehr, lab_result(patient, 800))
    assert "anc-moderate-neutropenia" in decided(ehr, patient, "anc-moderate-neutropenia")
    assert serve.metric("rems_adapter_notifications_total", '{kind="handshake"}') == 1
    assert serve.metric("rems_adapter_notifications_total", '{kind="event-notification"}') >= 1


def test_a_lost_notification_is_recovered_from_the_gap(
    ehr: QuickSekmet, tmp_path: Path, started: list[NotifyServe]
) -> None:
    ids = [seed(ehr.base_url, [recent_history([2100, 2000, 1900])]) for _ in range(3)]
    patients = [patient_of(i) for i in ids]

    def lose_event_2(method: str, path: str, body: bytes) -> bool:
        return b'"event-number"' in body and b'"valueString": "2"' in body.replace(b'":"', b'": "')

    port_holder: dict[str, str] = {}
    with LossyProxy("http://127.0.0.1:1", lose_event_2) as proxy:
        serve = NotifyServe(
            ehr.base_url,
            tmp_path / "state.sqlite",
            plans=backport("full-resource"),
            topics=(TOPIC,),
            endpoint_base=proxy.url,
        )
        proxy.target = serve.url
        serve.start()
        started.append(serve)
        port_holder["url"] = serve.url
        wait_for(lambda: active(ehr, f"{proxy.url}/notify"), what="active via the proxy")
        for number, patient in enumerate(patients, start=1):  # events 1, 2 (lost), 3
            create(ehr, lab_result(patient, 1200))

            def delivered(n: int = number) -> bool:  # one at a time: no reordering
                events = serve.metric(
                    "rems_adapter_notifications_total", '{kind="event-notification"}'
                )
                return events + len(proxy.dropped) >= n

            wait_for(delivered, what=f"event {number} delivered or lost")
        for patient in patients:
            assert decided(ehr, patient, "anc-mild-neutropenia") == ["anc-mild-neutropenia"]
        assert len(proxy.dropped) == 1
        assert serve.metric("rems_adapter_subscription_missing_events_total") == 1
        assert serve.metric("rems_adapter_notify_requeries_total") >= 1


def test_a_subscription_the_server_disabled_is_reactivated_and_what_it_missed_recovered(
    ehr: QuickSekmet, tmp_path: Path, started: list[NotifyServe]
) -> None:
    patients = [patient_of(seed(ehr.base_url, [recent_history([2100, 2000])])) for _ in range(2)]
    down = {"on": False}
    with LossyProxy("http://127.0.0.1:1") as proxy:
        serve = NotifyServe(
            ehr.base_url,
            tmp_path / "state.sqlite",
            plans=rest_hook(),
            endpoint_base=proxy.url,
            maintain_seconds=1.0,
        )
        proxy.target = serve.url
        proxy.fail = lambda: down["on"]  # type: ignore[attr-defined]
        serve.start()
        started.append(serve)
        endpoint = f"{proxy.url}/notify"
        [first] = wait_for(lambda: active(ehr, endpoint), what="active")
        down["on"] = True  # the subscriber is unreachable: the server gives up and disables it
        create(ehr, lab_result(patients[0], 1200))
        wait_for(
            lambda: (
                any(s["status"] == "error" for s in subscriptions(ehr.base_url, endpoint))
                or serve.metric(
                    "rems_adapter_subscriptions_maintained_total", '{action="reactivated"}'
                )
            ),
            what="the server disabling the Subscription",
        )
        down["on"] = False
        wait_for(
            lambda: (
                serve.metric(
                    "rems_adapter_subscriptions_maintained_total", '{action="reactivated"}'
                )
                >= 1
            ),
            what="re-activation",
        )
        wait_for(lambda: active(ehr, endpoint), what="active again")
        create(ehr, lab_result(patients[1], 1200))
        for patient in patients:  # the one created while disabled comes from the re-query
            assert decided(ehr, patient, "anc-mild-neutropenia") == ["anc-mild-neutropenia"]
        assert [s["id"] for s in active(ehr, endpoint)] == [first["id"]]


def test_a_silent_subscription_falls_back_to_polling(
    ehr: QuickSekmet, tmp_path: Path, started: list[NotifyServe], caplog: pytest.LogCaptureFixture
) -> None:
    patient = patient_of(seed(ehr.base_url, [recent_history([2100, 2000])]))
    lose = {"all": False}
    with LossyProxy("http://127.0.0.1:1", lambda m, p, b: lose["all"]) as proxy:
        serve = NotifyServe(
            ehr.base_url,
            tmp_path / "state.sqlite",
            plans=backport("id-only", heartbeat=1),
            topics=(TOPIC,),
            endpoint_base=proxy.url,
            maintain_seconds=3600.0,
        )
        proxy.target = serve.url
        serve.start()
        started.append(serve)
        wait_for(lambda: active(ehr, f"{proxy.url}/notify"), what="active")
        wait_for(
            lambda: serve.metric("rems_adapter_notifications_total", '{kind="heartbeat"}'),
            what="a heartbeat",
        )
        with caplog.at_level("WARNING", logger="adapter.pipeline.notify"):
            lose["all"] = True  # heartbeats and events are lost from now on
            create(ehr, lab_result(patient, 1200))
            wait_for(
                lambda: serve.metric("rems_adapter_subscription_silent") == 1,
                timeout=30,
                what="the watchdog",
            )
            assert decided(ehr, patient, "anc-mild-neutropenia") == ["anc-mild-neutropenia"]
        assert serve.metric("rems_adapter_subscription_fallbacks_total") == 1
        assert any("falling back to polling" in r.getMessage() for r in caplog.records)
        lose["all"] = False
        wait_for(
            lambda: serve.metric("rems_adapter_subscription_silent") == 0,
            timeout=30,
            what="heard again",
        )


def test_notifications_without_the_secret_or_not_conformant_get_4xx(
    ehr: QuickSekmet, tmp_path: Path, started: list[NotifyServe]
) -> None:
    serve = start(started, ehr, tmp_path, plans=rest_hook(), maintain_seconds=3600.0)
    obs = {"resourceType": "Observation", "id": "x1", "status": "final"}
    no_secret = requests.put(f"{serve.url}/notify/Observation/x1", json=obs, timeout=10)
    assert no_secret.status_code == 401
    assert no_secret.json()["resourceType"] == "OperationOutcome"
    wrong = requests.put(
        f"{serve.url}/notify/Observation/x1",
        json=obs,
        headers={SECRET_HEADER: "wrong"},
        timeout=10,
    )
    assert wrong.status_code == 401
    mismatch = requests.put(
        f"{serve.url}/notify/Observation/other",
        data=json.dumps(obs),
        headers=secret_headers(),
        timeout=10,
    )
    assert mismatch.status_code == 422
    assert mismatch.json()["issue"][0]["expression"] == ["Observation.id"]
    bad = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [
            {
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "subscription", "valueReference": {"reference": "Subscription/s"}},
                        {"name": "status", "valueCode": "active"},
                        {"name": "type", "valueCode": "nonsense"},
                    ],
                }
            }
        ],
    }
    answer = requests.post(
        f"{serve.url}/notify", data=json.dumps(bad), headers=secret_headers(), timeout=10
    )
    assert answer.status_code == 422
    assert answer.json()["issue"][0]["expression"] == [
        "Bundle.entry[0].resource.parameter[2].valueCode"
    ]
    not_json = requests.post(f"{serve.url}/notify", data=b"{", headers=secret_headers(), timeout=10)
    assert not_json.status_code == 400 and not_json.json()["resourceType"] == "OperationOutcome"
    ping = requests.post(f"{serve.url}/notify", data=b"", headers=secret_headers(), timeout=10)
    assert ping.status_code == 200
