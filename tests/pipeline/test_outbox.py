"""The outbox service: retries with backoff, dead letters, conflicts, at-least-once delivery."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from adapter.pipeline.outbox import Conflict, GiveUp, Outbox, Performed, Retry, RetryPolicy, Sink
from adapter.store import Effect, NewEffect
from adapter.store.base import OUTBOX_DEAD, OUTBOX_DONE
from adapter.store.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class Scripted(Sink):
    """A sink of our own interface whose answers the test scripts (an effect per answer)."""

    kinds = ("test",)

    def __init__(self, answers: list[object]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    def perform(self, effect: Effect) -> Performed:
        self.calls.append(effect.key)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, Performed)
        return answer


@pytest.fixture
def store(tmp_path: Path):
    s = SqliteStore(tmp_path / "s.sqlite")
    yield s
    s.close()


def _outbox(store, sink, clock, **policy) -> Outbox:
    return Outbox(store, {"test": sink}, policy=RetryPolicy(**policy), clock=clock)


def _put(store, key="e1", patient="Patient/1") -> None:
    store.put_effects([NewEffect(key, "test", patient, "{}", received_at=900.0)], 1_000.0)


def test_a_transient_failure_is_retried_after_a_growing_delay_then_done(store):
    clock = Clock()
    sink = Scripted([Retry("503"), Retry("503"), Performed({"id": "x"})])
    outbox = _outbox(store, sink, clock, first_seconds=10, max_seconds=1000)
    _put(store)
    assert outbox.run_once() == 1
    first = store.effect_by_key("e1")
    assert first is not None and first.attempts == 1 and first.last_error == "503"
    assert 7.5 <= first.next_at - clock.now <= 12.5  # 10 s, jittered +-25 %
    assert outbox.run_once() == 0  # not due yet
    clock.now = first.next_at
    outbox.run_once()
    second = store.effect_by_key("e1")
    assert second is not None and 15 <= second.next_at - clock.now <= 25  # doubled
    clock.now = second.next_at
    outbox.run_once()
    done = store.effect_by_key("e1")
    assert (
        done is not None and done.state == OUTBOX_DONE and orjson.loads(done.result) == {"id": "x"}
    )
    assert sink.calls == ["e1", "e1", "e1"]


def test_a_refusal_is_a_dead_letter_at_once_and_replay_performs_it_again(store):
    clock = Clock()
    sink = Scripted([GiveUp("HTTP 422"), Performed({"id": "y"})])
    outbox = _outbox(store, sink, clock)
    _put(store)
    outbox.run_once()
    [dead] = store.effects(OUTBOX_DEAD)
    assert dead.last_error == "HTTP 422" and store.dead_letters() == 1
    assert outbox.run_once() == 0
    assert store.replay_effect(dead.id, clock.now)
    outbox.run_once()
    assert store.effect(dead.id).state == OUTBOX_DONE


def test_too_many_attempts_make_a_dead_letter(store):
    clock = Clock()
    sink = Scripted([Retry("timeout")] * 3)
    outbox = _outbox(store, sink, clock, first_seconds=1, max_attempts=3)
    _put(store)
    for _ in range(3):
        outbox.run_once()
        clock.now += 10
    [dead] = store.effects(OUTBOX_DEAD)
    assert "after 3 attempts" in (dead.last_error or "")


def test_a_conflict_keeps_the_upstream_copy_and_asks_for_a_new_decision(store):
    clock = Clock()
    current = {"resourceType": "DetectedIssue", "id": "i1", "meta": {"versionId": "3"}}
    sink = Scripted([Conflict("changed", current)])
    outbox = _outbox(store, sink, clock)
    _put(store)
    outbox.run_once()
    assert store.effect_by_key("e1").state == OUTBOX_DONE
    assert store.resource("DetectedIssue", "i1") == current
    claim = store.claim_patient("w", clock.now, 10)
    assert claim is not None and claim.patient == "Patient/1" and claim.items[0].body is None


def test_an_unexpected_error_is_retried_not_lost(store):
    clock = Clock()
    sink = Scripted([RuntimeError("boom"), Performed({})])
    outbox = _outbox(store, sink, clock, first_seconds=1)
    _put(store)
    outbox.run_once()
    effect = store.effect_by_key("e1")
    assert effect.state != OUTBOX_DONE and "RuntimeError" in (effect.last_error or "")
    clock.now += 5
    outbox.run_once()
    assert store.effect_by_key("e1").state == OUTBOX_DONE


def test_an_effect_of_an_unknown_kind_is_a_dead_letter(store):
    store.put_effects([NewEffect("k", "nobody", None, "{}")], 1_000.0)
    Outbox(store, {}, clock=Clock()).run_once()
    assert store.dead_letters() == 1
