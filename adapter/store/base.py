"""The state store interface: one contract, several implementations (SQLite, PostgreSQL).

The store is where everything durable lives. It has no clinical logic: it keeps what the
pipeline hands it and answers what the pipeline asks. Every implementation passes the same
contract tests (``tests/store``, parametrised over the implementations).

What it holds::

    meta          the schema version and the EHR base URL the state belongs to
    inbox         what arrived (push, notify, poll, mllp, files): one row per distinct item,
                  deduplicated on its key, claimed per patient by one worker at a time
    leases        named leases with an expiry (a patient being decided, the poll leader)
    outbox        effects to perform (DetectedIssue writes, forwarded Observations, REMS
                  calls), deduplicated on their key, with attempts, next attempt time, the
                  last error, and a dead-letter state an operator lists and replays
    resources     the FHIR resources the rules need, per patient (what the worker gathers)
    patients      per-patient state (a JSON object the pipeline owns) and the recheck date
    watermarks    named raw strings (poll positions: the server's meta.lastUpdated)
    audit         one row per decision: inputs by reference and version, rules and mappings
                  versions, backend, outcome, time

Transactions. ``with store.transaction():`` groups calls: everything inside commits together
or not at all, durably, when the block ends (an exception rolls back). A call outside a
transaction is its own transaction. Transactions are per thread; a store object may be used
from several threads at once. Nested ``transaction()`` blocks join the outer one.

Time. Methods that depend on time take ``now`` (seconds since the epoch, float) from the
caller, so tests drive the clock and several processes agree on the wall clock.

Concurrency (several workers on one store). Claims are exclusive while their lease lasts:
``claim_patient`` never hands the same patient to two holders whose leases overlap, and
``claim_effects`` never hands the same effect to two holders whose leases overlap. A holder
that dies is replaced when its lease expires (at-least-once; effects are idempotent).

Errors. Every failure of the underlying database is a `StateError` (kind ``state``); a store
that belongs to another EHR is `ForeignStateError` (kind ``configuration``, exit 3); a schema
newer than the code is `StateError`. Messages name tables and keys, never resource content.

Schema. Versioned SQL files in ``adapter/store/migrations/NNNN_name.sql``, applied in order,
each once, recorded in ``schema_migrations``. The SQL is portable between SQLite and
PostgreSQL, except the tokens each dialect substitutes: ``@SERIAL@`` (an auto-increasing
integer primary key). Placeholders in the DML of `adapter.store.sql` are ``?`` (PostgreSQL
implementations translate them to ``%s``; no statement contains a literal ``?``).
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from adapter.errors import ConfigurationError, StateError

#: Inbox item states. `parked`: its patient is not known yet (never matched by guess).
INBOX_PENDING = "pending"
INBOX_DONE = "done"
INBOX_PARKED = "parked"

#: Outbox effect states.
OUTBOX_PENDING = "pending"
OUTBOX_DONE = "done"
OUTBOX_DEAD = "dead"


class ForeignStateError(ConfigurationError):
    """The state store belongs to another EHR base URL (exit 3; never silently skip work)."""


__all__ = [
    "INBOX_DONE",
    "INBOX_PARKED",
    "INBOX_PENDING",
    "OUTBOX_DEAD",
    "OUTBOX_DONE",
    "OUTBOX_PENDING",
    "AuditRecord",
    "Claim",
    "Effect",
    "ForeignStateError",
    "InboxItem",
    "NewEffect",
    "NewItem",
    "StateError",
    "Store",
]


@dataclass(frozen=True)
class NewItem:
    """Something that arrived, to put in the inbox.

    `key` deduplicates: the same key put twice is one item (the second put answers as the
    first). Use the resource's ``Type/id/_history/version`` or a digest of its content.
    `patient` is ``Patient/id``, or None when the patient is not known yet (the item is then
    parked until `assign_parked`). `body` is the resource as JSON text, or None for "decide this
    patient again" (the poll source keeps resources itself and only asks for a decision).
    `received_at` is when the adapter received it (the end-to-end latency starts there)."""

    key: str
    source: str
    patient: str | None
    body: str | None
    received_at: float


@dataclass(frozen=True)
class InboxItem:
    id: int
    key: str
    source: str
    patient: str | None
    body: str | None
    received_at: float
    state: str


@dataclass(frozen=True)
class Claim:
    """A patient claimed by one holder until `expires_at`, with its pending items."""

    patient: str
    holder: str
    expires_at: float
    items: tuple[InboxItem, ...]

    @property
    def lease(self) -> str:
        return patient_lease(self.patient)


def patient_lease(patient: str) -> str:
    return f"patient:{patient}"


@dataclass(frozen=True)
class NewEffect:
    """An effect to perform. `key` deduplicates (a decision replayed enqueues nothing new).
    `kind` names the sink that performs it (e.g. ``fhir-write``); `body` is JSON text the sink
    understands. `received_at`: receipt of the result that caused it, when known."""

    key: str
    kind: str
    patient: str | None
    body: str
    received_at: float | None = None


@dataclass(frozen=True)
class Effect:
    id: int
    key: str
    kind: str
    patient: str | None
    body: str
    state: str
    attempts: int
    next_at: float
    last_error: str | None
    received_at: float | None
    created_at: float
    done_at: float | None
    result: str | None
    #: claimed before by a holder that never finished it (its lease expired: it may have
    #: performed the effect and died before recording it)
    reclaimed: bool = False


@dataclass(frozen=True)
class AuditRecord:
    """One decision. `inputs`: references with versions (``Observation/1/_history/2``);
    `outcome`: what was decided (finding codes and identifiers, withdrawals), never values."""

    patient: str
    at: float
    backend: str
    rules_version: str
    mappings_version: str
    inputs: tuple[str, ...]
    outcome: tuple[str, ...]
    id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Store(abc.ABC):
    """The contract every state store implements (see the module docstring)."""

    #: "sqlite" or "postgresql"
    dialect: str

    # -- lifecycle -----------------------------------------------------------------------------

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection. The store is unusable afterwards."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group calls in one durable transaction (see the module docstring)."""

    @abc.abstractmethod
    def schema_version(self) -> int:
        """The highest migration applied."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StateError when the store cannot answer (readiness)."""

    def relax_durability_for_this_thread(self) -> None:  # noqa: B027 - optional
        """Commits made by the calling thread from now on may be lost on a power cut or an OS
        crash (never on a process crash), in exchange for not waiting on the disk. For threads
        whose lost commit is simply redone (workers, outbox performers: the inbox item stays
        pending, the effect stays due), never for a write that is acknowledged to a sender.
        A later durable commit of any thread makes the earlier ones durable too (SQLite's WAL
        is one sequence; PostgreSQL's synchronous_commit=off behaves alike)."""

    @property
    @abc.abstractmethod
    def where(self) -> str:
        """What to call this store in messages: a file path, or a URL without password."""

    # -- the EHR it belongs to -----------------------------------------------------------------

    @abc.abstractmethod
    def ehr_base(self) -> str | None:
        """The EHR base URL this state belongs to, or None before the first bind."""

    @abc.abstractmethod
    def bind_ehr(self, base_url: str) -> None:
        """Record `base_url` (normalised: no trailing slash) as the EHR this state belongs to;
        raise ForeignStateError when it already belongs to another."""

    # -- inbox ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def put_items(self, items: Sequence[NewItem]) -> list[bool]:
        """Put items durably (one transaction unless inside one); for each, True when it is
        new, False when its key was already there (that item is left as it was)."""

    @abc.abstractmethod
    def claim_patient(
        self, holder: str, now: float, lease_seconds: float, *, patient: str | None = None
    ) -> Claim | None:
        """The oldest patient with pending items and no live lease (not even `holder`'s own),
        leased to `holder`, with its pending items in arrival order; None when there is none.
        With `patient`, only that patient (and a lease `holder` already has is renewed)."""

    @abc.abstractmethod
    def complete_items(self, claim: Claim, item_ids: Sequence[int], now: float) -> None:
        """Mark items done (decided). Items put after the claim stay pending."""

    @abc.abstractmethod
    def assign_parked(self, item_ids: Sequence[int], patient: str) -> None:
        """Give parked items their patient: they become pending."""

    @abc.abstractmethod
    def parked_items(self, limit: int = 1000) -> list[InboxItem]:
        """Parked items, oldest first."""

    @abc.abstractmethod
    def item(self, key: str) -> InboxItem | None:
        """The item with `key`, in whatever state."""

    @abc.abstractmethod
    def inbox_depth(self) -> int:
        """Pending items in the whole store (parked ones are not counted)."""

    # -- leases --------------------------------------------------------------------------------

    @abc.abstractmethod
    def acquire_lease(self, name: str, holder: str, now: float, seconds: float) -> bool:
        """Take or renew lease `name` for `holder` until now + seconds: True when `holder`
        now holds it (it was free, expired, or already theirs)."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Drop the lease when `holder` holds it (a no-op otherwise)."""

    @abc.abstractmethod
    def lease_holder(self, name: str, now: float) -> str | None:
        """Who holds a live lease `name`, if anyone."""

    # -- outbox --------------------------------------------------------------------------------

    @abc.abstractmethod
    def put_effects(self, effects: Sequence[NewEffect], now: float) -> list[bool]:
        """Enqueue effects, due now; for each, True when new, False when its key was there."""

    @abc.abstractmethod
    def claim_effects(
        self, holder: str, now: float, lease_seconds: float, limit: int
    ) -> list[Effect]:
        """Up to `limit` due pending effects leased to `holder`, oldest first, at most one per
        patient and never one behind an earlier pending effect of the same patient (effects
        of a patient happen in the order they were enqueued)."""

    @abc.abstractmethod
    def complete_effect(self, effect_id: int, now: float, result: str | None = None) -> None:
        """Mark an effect done, with what it produced (JSON text, e.g. the id written)."""

    @abc.abstractmethod
    def retry_effect(self, effect_id: int, error: str, next_at: float) -> None:
        """Count a failed attempt; try again at `next_at` (the caller chose the backoff)."""

    @abc.abstractmethod
    def dead_letter(self, effect_id: int, error: str, now: float) -> None:
        """Give up on an effect: it stays, as a dead letter, until replayed."""

    @abc.abstractmethod
    def replay_effect(self, effect_id: int, now: float) -> bool:
        """A dead letter becomes pending again (attempts reset); False when it is not dead."""

    @abc.abstractmethod
    def effect(self, effect_id: int) -> Effect | None: ...

    @abc.abstractmethod
    def effect_by_key(self, key: str) -> Effect | None: ...

    @abc.abstractmethod
    def effects(self, state: str, limit: int = 1000, *, after: int = 0) -> list[Effect]:
        """Effects in `state` whose id is above `after`, oldest first."""

    @abc.abstractmethod
    def outbox_depth(self) -> int:
        """Pending effects in the whole store (dead letters are not counted)."""

    @abc.abstractmethod
    def dead_letters(self) -> int: ...

    # -- resources (what the rules need, per patient) -------------------------------------------

    @abc.abstractmethod
    def upsert_resource(
        self,
        resource: dict[str, Any],
        patient: str | None,
        identifier: str | None = None,
        base_version: str | None = None,
    ) -> None:
        """Keep `resource` (keyed by type and id; a later call replaces it). `identifier`: our
        decision identifier when it is one of our DetectedIssues; `base_version`: the version
        we edited it from, when we made this version only to link a decision."""

    @abc.abstractmethod
    def resource(self, kind: str, rid: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def held_version(self, kind: str, rid: str) -> tuple[str, str] | None:
        """(versionId, raw meta.lastUpdated) of the held resource."""

    @abc.abstractmethod
    def base_version(self, kind: str, rid: str) -> str | None: ...

    @abc.abstractmethod
    def delete_resource(self, kind: str, rid: str) -> None: ...

    @abc.abstractmethod
    def patient_resources(self, patient: str) -> list[dict[str, Any]]:
        """Everything held for the patient, ordered by type and id. A version we made only to
        link a decision reads as its `base_version` (our own edit never looks like input)."""

    @abc.abstractmethod
    def has_identifier(self, identifier: str) -> bool:
        """Whether one of our DetectedIssues with this decision identifier is held."""

    @abc.abstractmethod
    def resource_count(self, kind: str | None = None) -> int: ...

    # -- patients ------------------------------------------------------------------------------

    @abc.abstractmethod
    def patient_state(self, patient: str) -> dict[str, Any] | None:
        """The pipeline's JSON state of the patient, or None for a patient never seen."""

    @abc.abstractmethod
    def set_patient_state(self, patient: str, state: dict[str, Any], now: float) -> None: ...

    @abc.abstractmethod
    def patients(self) -> list[str]:
        """Every patient with a state, sorted."""

    @abc.abstractmethod
    def set_recheck(self, patient: str, due: str | None) -> None:
        """Decide the patient again on ISO date `due` (None: no recheck)."""

    @abc.abstractmethod
    def due_rechecks(self, today: str) -> list[str]:
        """Patients whose recheck date is on or before ISO date `today`, sorted."""

    # -- watermarks ----------------------------------------------------------------------------

    @abc.abstractmethod
    def watermark(self, name: str) -> str | None: ...

    @abc.abstractmethod
    def set_watermark(self, name: str, value: str) -> None: ...

    # -- audit ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def append_audit(self, record: AuditRecord) -> int:
        """Append one decision record; its id."""

    @abc.abstractmethod
    def audit(self, patient: str, limit: int = 1000) -> list[AuditRecord]:
        """The patient's decisions, oldest first."""
