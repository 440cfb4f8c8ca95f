"""What only the PostgreSQL store promises (the shared contract is tests/store/test_contract.py).

Against a real private PostgreSQL (tests/setup/postgres.py); each test has its own database.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
import pytest

from adapter.errors import EXIT_CONFIG, EXIT_UPSTREAM, Kind
from adapter.store import NewItem, StateError, open_store
from adapter.store.base import OUTBOX_PENDING, NewEffect
from adapter.store.postgres import CLAIM_LOCK_SPACE, PostgresStore
from adapter.store.sql import migrations
from tests.setup.postgres import PostgresServer, start_postgres

T0 = 1_800_000_000.0


def item(key: str, patient: str = "Patient/1") -> NewItem:
    return NewItem(key, "push", patient, '{"resourceType":"Observation"}', T0)


@pytest.fixture
def pg(postgres_dsn: str) -> Iterator[PostgresStore]:
    store = PostgresStore(postgres_dsn)
    try:
        yield store
    finally:
        store.close()


def test_open_store_picks_postgresql_for_a_url_and_never_shows_the_password(postgres_dsn: str):
    store = open_store(postgres_dsn)
    try:
        assert isinstance(store, PostgresStore) and store.dialect == "postgresql"
        password = psycopg.conninfo.conninfo_to_dict(postgres_dsn)["password"]
        assert password and password not in store.where
        assert store.where.startswith("postgresql://postgres@127.0.0.1:")
        assert store.where.endswith(postgres_dsn.rsplit("/", 1)[1])
    finally:
        store.close()


def test_workers_starting_together_apply_each_migration_once(postgres_dsn: str):
    opened: list[PostgresStore] = []
    failures: list[BaseException] = []
    start = threading.Barrier(5)

    def open_one() -> None:
        start.wait()
        try:
            opened.append(PostgresStore(postgres_dsn))
        except BaseException as error:  # reported below
            failures.append(error)

    threads = [threading.Thread(target=open_one) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    try:
        assert failures == [] and len(opened) == 5
        newest = migrations()[-1][0]
        assert {store.schema_version() for store in opened} == {newest}
        with psycopg.connect(postgres_dsn) as connection:
            tables = connection.execute(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() "
                "AND tablename = 'inbox'"
            ).fetchone()
        assert tables == (1,)
    finally:
        for store in opened:
            store.close()


def test_a_wrong_password_is_a_state_error_naming_the_server_not_the_password(
    postgres_server: PostgresServer,
):
    dsn = postgres_server.dsn.replace(postgres_server.password, "not-the-password")
    with pytest.raises(StateError) as caught:
        PostgresStore(dsn)
    assert caught.value.kind is Kind.STATE and caught.value.exit_code == EXIT_UPSTREAM
    assert "password authentication failed" in str(caught.value)
    assert "not-the-password" not in str(caught.value)
    assert caught.value.where == f"postgresql://postgres@127.0.0.1:{postgres_server.port}/postgres"


def test_a_database_that_does_not_exist_is_a_state_error(postgres_server: PostgresServer):
    with pytest.raises(StateError, match="does not exist"):
        PostgresStore(postgres_server.dsn_for("no_such_database"))


def test_an_unusable_dsn_is_a_configuration_error():
    with pytest.raises(Exception) as caught:
        open_store("postgresql://[not-a-host")
    assert getattr(caught.value, "exit_code", None) == EXIT_CONFIG
    assert getattr(caught.value, "where", None) == "--state"


def test_errors_never_quote_the_values_of_a_row(pg: PostgresStore):
    with pytest.raises(StateError) as caught, pg.transaction():
        pg._x("INSERT INTO store_meta (key, value) VALUES (?, ?)", ("Doe^Jane", "1"))
        pg._x("INSERT INTO store_meta (key, value) VALUES (?, ?)", ("Doe^Jane", "2"))
    text = str(caught.value)
    assert "duplicate key value violates unique constraint" in text and "23505" in text
    assert "Doe" not in text and "Jane" not in text
    # the failed transaction was rolled back and its connection is usable again
    assert pg._meta("Doe^Jane") is None
    pg.set_watermark("q", "v")
    assert pg.watermark("q") == "v"


def test_a_patient_being_claimed_elsewhere_is_skipped_not_waited_for(
    pg: PostgresStore, postgres_dsn: str
):
    pg.put_items([item("a1", "Patient/A"), item("b1", "Patient/B")])
    answer: list[str | None] = []
    with psycopg.connect(postgres_dsn) as other:
        # another worker is in the middle of claiming Patient/A (its transaction is open)
        other.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (CLAIM_LOCK_SPACE, "Patient/A")
        )

        def claim() -> None:
            got = pg.claim_patient("w2", T0, 30)
            answer.append(None if got is None else got.patient)

        thread = threading.Thread(target=claim)
        thread.start()
        thread.join(timeout=60)
        finished = not thread.is_alive()
        other.rollback()
    thread.join(timeout=60)
    assert finished, "the claim waited for the other worker's transaction"
    assert answer == ["Patient/B"]
    # once that worker is gone without taking the lease, Patient/A is claimable
    later = pg.claim_patient("w2", T0, 30)
    assert later is not None and later.patient == "Patient/A"


def test_an_effect_locked_by_another_transaction_is_skipped(pg: PostgresStore, postgres_dsn: str):
    pg.put_effects(
        [
            NewEffect("e1", "fhir-write", "Patient/A", "{}"),
            NewEffect("e2", "fhir-write", "Patient/B", "{}"),
        ],
        T0,
    )
    with psycopg.connect(postgres_dsn) as other:
        other.execute("SELECT id FROM outbox WHERE effect_key = 'e1' FOR UPDATE")
        claimed = pg.claim_effects("w1", T0, 30, 10)
        other.rollback()
    assert [e.key for e in claimed] == ["e2"]
    assert [e.key for e in pg.claim_effects("w2", T0, 30, 10)] == ["e1"]
    assert pg.effect_by_key("e1") is not None
    assert pg.outbox_depth() == 2 and pg.effects(OUTBOX_PENDING)[0].key == "e1"


def test_more_threads_than_pooled_connections_all_get_their_turn(postgres_dsn: str):
    store = PostgresStore(postgres_dsn, pool_max=2)
    failures: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for k in range(10):
                with store.transaction():
                    store.put_items([item(f"t{n}-{k}", f"Patient/{n}")])
                    store.set_watermark(f"w{n}", str(k))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == []
        assert store.inbox_depth() == 80
        assert {store.watermark(f"w{n}") for n in range(8)} == {"9"}
    finally:
        store.close()


def test_items_put_together_keep_their_order_and_overlapping_puts_never_deadlock(
    postgres_dsn: str,
):
    stores = [PostgresStore(postgres_dsn) for _ in range(4)]
    keys = [f"k{n:03}" for n in range(60)]
    answers: list[list[bool]] = [[] for _ in stores]
    failures: list[BaseException] = []

    def work(index: int) -> None:
        # every worker is handed the same batches of 10, half of them in reverse order
        try:
            for start in range(0, len(keys), 10):
                batch = [item(k, f"Patient/{k}") for k in keys[start : start + 10]]
                if index % 2:
                    batch.reverse()
                answers[index].extend(stores[index].put_items(batch))
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(len(stores))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert failures == []
        assert sum(answer for part in answers for answer in part) == len(keys)  # each new once
        assert stores[0].inbox_depth() == len(keys)
        stores[0].put_items([item("z2", "Patient/Z"), item("z1", "Patient/Z")])
        claim = stores[0].claim_patient("w", T0, 30, patient="Patient/Z")
        assert claim is not None and [i.key for i in claim.items] == ["z2", "z1"]
    finally:
        for store in stores:
            store.close()


def test_round_trips_are_counted_and_a_busy_connection_is_not_checked(postgres_dsn: str):
    # one connection each, already used (migrations): counts are exact
    busy = PostgresStore(postgres_dsn, pool_max=1, check_idle_s=3600)  # never checked
    always = PostgresStore(postgres_dsn, pool_max=1, check_idle_s=0)  # always checked
    try:
        for store, check in ((busy, 0), (always, 1)):
            before = store.round_trips
            store.set_watermark("q", "1")
            assert store.round_trips - before == check + 1
            before = store.round_trips
            with store.transaction():
                store.set_watermark("q", "2")
                store.set_watermark("r", "3")
            assert store.round_trips - before == check + 4  # BEGIN, two statements, COMMIT
    finally:
        busy.close()
        always.close()


def test_after_a_database_restart_idle_connections_are_replaced_and_busy_ones_fail_once():
    server = start_postgres()
    try:
        checked = PostgresStore(server.dsn, check_idle_s=0)
        busy = PostgresStore(server.dsn, check_idle_s=3600)
        try:
            checked.put_items([item("before")])
            busy.set_watermark("q", "before")
            server.restart()
            checked.put_items([item("after")])  # a dead connection is replaced, no call fails
            assert checked.item("before") is not None and checked.item("after") is not None
            with pytest.raises(StateError) as caught:
                busy.set_watermark("q", "lost")  # its connection was in use just now
            assert caught.value.where == busy.where
            busy.set_watermark("q", "after")  # the pool has replaced it
            assert busy.watermark("q") == "after"
        finally:
            checked.close()
            busy.close()
    finally:
        server.stop()


def test_the_password_can_come_from_the_environment_alone(
    postgres_server: PostgresServer, postgres_dsn: str, monkeypatch: pytest.MonkeyPatch
):
    without = postgres_dsn.replace(f":{postgres_server.password}@", "@")
    assert postgres_server.password not in without
    with pytest.raises(StateError, match="password"):
        PostgresStore(without)  # no password anywhere: refused, clearly
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    store = PostgresStore(without)  # libpq reads PGPASSWORD
    try:
        store.set_watermark("q", "v")
        assert store.watermark("q") == "v"
    finally:
        store.close()


def test_a_claim_tries_the_advisory_lock_of_the_patient_it_takes_only(pg: PostgresStore):
    pg.put_items([item(f"k{n}", f"Patient/{n}") for n in range(5)])
    with pg.transaction():  # the claim's transaction-level locks stay visible until the end
        claim = pg.claim_patient("w1", T0, 30)
        locks = pg._all(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = ? "
            "AND pid = pg_backend_pid()",
            (CLAIM_LOCK_SPACE,),
        )
    assert claim is not None and claim.patient == "Patient/0"
    assert locks == [(1,)]  # not one per candidate: other workers may claim the others


def test_a_claim_is_one_round_trip(postgres_dsn: str):
    store = PostgresStore(postgres_dsn, pool_max=1, check_idle_s=3600)  # no check counted
    try:
        store.put_items([item("a1", "Patient/A"), item("a2", "Patient/A")])
        before = store.round_trips
        claim = store.claim_patient("w1", T0, 30)
        assert claim is not None and [i.key for i in claim.items] == ["a1", "a2"]
        assert store.round_trips - before == 1
    finally:
        store.close()


def test_a_relaxed_thread_commits_without_waiting_for_the_flush_and_others_still_wait(
    pg: PostgresStore,
):
    seen: dict[str, object] = {}

    def relaxed() -> None:
        pg.relax_durability_for_this_thread()
        seen["relaxed"] = pg._one("SHOW synchronous_commit")
        with pg.transaction():
            seen["relaxed_in_transaction"] = pg._one("SHOW synchronous_commit")
            pg.set_watermark("from-relaxed", "1")

    thread = threading.Thread(target=relaxed)
    thread.start()
    thread.join(timeout=60)
    assert seen == {"relaxed": ("off",), "relaxed_in_transaction": ("off",)}
    assert pg._one("SHOW synchronous_commit") == ("on",)  # this thread: durable commits
    assert pg.watermark("from-relaxed") == "1"  # and it sees what the other committed
