"""Dead letters an operator lists, inspects and replays; the audit of a patient's decisions; the
state store bound to one EHR."""

from __future__ import annotations

import json

import pytest

from adapter.cli import main
from tests.serve.faulty_proxy import FaultyProxy
from tests.serve.kit import codes, issues, lab_result, recent_history, seed

pytestmark = pytest.mark.integration


def test_a_refused_write_is_a_dead_letter_listed_shown_and_replayed(
    serve_factory, stock_server, tmp_path, capsys
):
    ids = seed(stock_server.base_url, [recent_history([2100, 2000])])
    patient = next(v for v in ids.values() if v.startswith("Patient/"))
    state = tmp_path / "ops.sqlite"
    with FaultyProxy(stock_server.root_url) as proxy:
        serve = serve_factory(ehr_url=f"{proxy.url}/fhir", state=state)
        proxy.mode = "refuse"
        assert serve.push(lab_result(patient, 1200)).status_code == 202
        serve.settle()
        assert serve.metric("rems_adapter_dead_letters") == 1
        assert issues(stock_server.base_url, patient) == []

        capsys.readouterr()
        assert main(["outbox", "list", "--state", str(state)]) == 0
        listed = capsys.readouterr().out
        assert "1 dead letter" in listed and "issue-create" in listed and "HTTP 422" in listed
        assert main(["outbox", "list", "--json", "--state", str(state)]) == 0
        [line] = capsys.readouterr().out.splitlines()
        effect_id = str(json.loads(line)["id"])
        assert main(["outbox", "show", effect_id, "--state", str(state)]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["body"]["resource"]["resourceType"] == "DetectedIssue"
        assert main(["outbox", "show", "999", "--state", str(state)]) == 4
        assert "no effect 999" in capsys.readouterr().err

        proxy.mode = "pass"
        assert main(["outbox", "replay", effect_id, "--state", str(state)]) == 0
        assert "1 effect queued again" in capsys.readouterr().out
        serve.settle()
        assert codes(issues(stock_server.base_url, patient)) == ["anc-mild-neutropenia"]
        assert serve.metric("rems_adapter_dead_letters") == 0

        assert main(["audit", patient, "--state", str(state)]) == 0
        audit = capsys.readouterr().out
        assert "local" in audit and "finding anc-mild-neutropenia" in audit
        assert "input Observation/" in audit
        assert main(["audit", patient, "--json", "--state", str(state)]) == 0
        records = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert records and all(r["patient"] == patient for r in records)
        assert all(r["rulesVersion"] and r["mappingsVersion"] for r in records)


def test_a_missing_state_store_is_exit_4(tmp_path, capsys):
    assert main(["outbox", "list", "--state", str(tmp_path / "none.sqlite")]) == 4
    assert "no state store" in capsys.readouterr().err


def test_a_state_store_of_another_ehr_is_refused_with_exit_3(stock_server, tmp_path, capsys):
    from adapter.store.sqlite import SqliteStore

    state = tmp_path / "bound.sqlite"
    store = SqliteStore(state)
    store.bind_ehr("http://127.0.0.1:1/other-ehr/fhir")
    store.close()
    argv = [
        "serve",
        "--fhir-base",
        stock_server.base_url,
        "--listen",
        "127.0.0.1:0",
        "--state",
        str(state),
        "--no-poll",
    ]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "other-ehr" in err and "Traceback" not in err
