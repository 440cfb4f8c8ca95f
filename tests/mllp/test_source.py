"""serve's MLLP source on a real SQLite state store (no EHR): AA only after the durable write,
one inbox item per result, duplicates acknowledged and stored once, parked when the patient is
unknown, AR when the store cannot take the write; the group commit."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from adapter import cli
from adapter.errors import StateError
from adapter.mllp.server import Limits
from adapter.pipeline.intake import Arrival, Intake, Receipt
from adapter.pipeline.metrics import Metrics
from adapter.pipeline.mllp_source import GroupCommit, MllpSettings, MllpSource, unmatched
from adapter.store.sqlite import SqliteStore
from tests.hl7v2.kit import TABLES, obr, obx, options, oru, sample
from tests.mllp.kit import msa

ANC = "751-8^ANC^LN"


@pytest.fixture
def state(tmp_path: Path) -> Iterator[tuple[SqliteStore, Path]]:
    path = tmp_path / "state.sqlite"
    store = SqliteStore(path)
    yield store, path
    store.close()


def _source(store: SqliteStore, metrics: Metrics | None = None) -> MllpSource:
    metrics = metrics or Metrics(store)
    return MllpSource(
        Intake(store, metrics),
        store,
        TABLES,
        MllpSettings("127.0.0.1", 0, options(), Limits(), match_interval=3600),
        registry=metrics.registry,
    ).start()


def _client(source: MllpSource):
    from adapter.mllp.client import MllpClient

    return MllpClient(*source.address, timeout=10)


def test_aa_after_the_durable_write_and_duplicates_stored_once(state, capsys):
    store, path = state
    metrics = Metrics(store)
    source = _source(store, metrics)
    try:
        with _client(source) as lab:
            raw = oru(
                obr(), obx(1, ANC, "0.8"), obx(2, "770-8^N^LN", "20", unit="%"), control="M-1"
            )
            assert msa(lab.send(raw)) == ("AA", "M-1")
            parked = store.parked_items()  # no EHR: the patient is not known yet
            assert [item.key for item in parked] == [
                "mllp:LAB|NORTHLAB|M-1#1",
                "mllp:LAB|NORTHLAB|M-1#2",
            ]
            assert msa(lab.send(raw)) == ("AA", "M-1")  # acknowledged again
            assert len(store.parked_items()) == 2  # and not stored twice
            assert msa(lab.send(sample("nist-lri-gu-002-cbc.hl7")))[0] == "AA"
    finally:
        source.stop()
    rows = unmatched(store)
    assert {(row.identifier_value, row.code) for row in rows} >= {("MRN1", "751-8")}
    text = metrics.exposition().decode()
    assert "rems_adapter_mllp_unmatched 5.0" in text
    assert 'rems_adapter_results_received_total{source="mllp"}' in text
    # operators see them
    assert cli.main(["mllp", "unmatched", "--state", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "urn:oid:2.16.840.1.113883.3.72.5.30.2|MRN1  751-8" in out
    assert "5 results waiting for their patient" in err


def test_a_store_that_cannot_write_gets_ar_and_nothing_is_acknowledged(state):
    store, _ = state
    source = _source(store)
    try:
        store.close()  # every write now fails
        with _client(source) as lab:
            assert msa(lab.send(oru(obr(), obx(1, ANC, "1"), control="X1"))) == ("AR", "X1")
    finally:
        source.stop()


def test_a_missing_state_store_is_reported_by_the_cli(tmp_path, capsys):
    assert cli.main(["mllp", "unmatched", "--state", str(tmp_path / "none.sqlite")]) == 4
    assert "no state store" in capsys.readouterr().err


def test_group_commit_puts_waiting_writes_in_one_transaction():
    calls: list[int] = []
    gate = threading.Event()
    entered = threading.Event()

    def receive(arrivals: Sequence[Arrival]) -> list[Receipt]:
        calls.append(len(arrivals))
        if len(calls) == 1:
            entered.set()
            gate.wait(10)  # the first commit is slow: the others queue up behind it
        return [Receipt(a.key or "", True, None) for a in arrivals]

    commit = GroupCommit(receive).start()
    results: list[list[Receipt]] = []
    try:

        def submit(n: int) -> None:
            results.append(commit.submit([Arrival({}, "mllp", key=f"k{n}-{i}") for i in range(2)]))

        first = threading.Thread(target=submit, args=(0,))
        first.start()
        assert entered.wait(10)
        others = [threading.Thread(target=submit, args=(n,)) for n in range(1, 6)]
        for thread in others:
            thread.start()
        for _ in range(1000):  # bounded: until the five wait behind the first
            if commit.waiting >= 5:
                break
            threading.Event().wait(0.01)
        gate.set()
        for thread in [first, *others]:
            thread.join(10)
    finally:
        commit.stop()
    assert calls == [2, 10]  # one transaction for the five that waited
    assert sorted(len(r) for r in results) == [2] * 6
    assert all(r[0].key.split("-")[0] == r[1].key.split("-")[0] for r in results)


def test_group_commit_failure_reaches_every_waiter():
    def receive(arrivals: Sequence[Arrival]) -> list[Receipt]:
        raise StateError("disk full")

    commit = GroupCommit(receive).start()
    try:
        with pytest.raises(StateError):
            commit.submit([Arrival({}, "mllp", key="k")])
    finally:
        commit.stop()
