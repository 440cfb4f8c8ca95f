"""Operator commands on the state store: ``rems-adapter outbox list|show|replay`` and
``rems-adapter audit PATIENT``.

They print to stdout for the operator who asked (a patient reference and a DetectedIssue's text
are what they need to see); nothing here is logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TextIO

from adapter.errors import NotFoundError, UsageError
from adapter.store import Effect, Store
from adapter.store.base import OUTBOX_DEAD


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ids(raw: Sequence[str]) -> list[int]:
    out = []
    for value in raw:
        if not value.isdigit():
            raise UsageError(
                f"'{value}' is not an effect id (a number from `outbox list`)", where="ID"
            )
        out.append(int(value))
    return out


def outbox_list(
    store: Store, out: TextIO, *, state: str = OUTBOX_DEAD, as_json: bool = False
) -> int:
    effects = store.effects(state, limit=10_000)
    if as_json:
        for effect in effects:
            out.write(json.dumps(_summary(effect)) + "\n")
        return 0
    if not effects:
        out.write(f"no {'dead letters' if state == OUTBOX_DEAD else state + ' effects'}\n")
        return 0
    out.write(f"{'ID':>6}  {'KIND':<14} {'ATTEMPTS':>8}  {'SINCE':<20}  PATIENT  LAST ERROR\n")
    for e in effects:
        out.write(
            f"{e.id:>6}  {e.kind:<14} {e.attempts:>8}  {_when(e.done_at or e.created_at):<20}  "
            f"{e.patient or '-'}  {e.last_error or ''}\n"
        )
    out.write(
        f"{len(effects)} {'dead letter' if len(effects) == 1 else 'dead letters'}"
        if state == OUTBOX_DEAD
        else f"{len(effects)} effects"
    )
    out.write(
        "; replay with `rems-adapter outbox replay ID` (or --all)\n"
        if state == OUTBOX_DEAD
        else "\n"
    )
    return 0


def _summary(effect: Effect) -> dict[str, object]:
    return {
        "id": effect.id,
        "key": effect.key,
        "kind": effect.kind,
        "patient": effect.patient,
        "state": effect.state,
        "attempts": effect.attempts,
        "lastError": effect.last_error,
        "created": _when(effect.created_at),
        "nextAttempt": _when(effect.next_at) if effect.state == "pending" else None,
        "finished": _when(effect.done_at),
    }


def outbox_show(store: Store, ids: Sequence[str], out: TextIO) -> int:
    for effect_id in _ids(ids):
        effect = store.effect(effect_id)
        if effect is None:
            raise NotFoundError(f"no effect {effect_id} in this state store", where="ID")
        record = _summary(effect)
        record["body"] = json.loads(effect.body)
        record["result"] = json.loads(effect.result) if effect.result else None
        out.write(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return 0


def outbox_replay(store: Store, ids: Sequence[str], out: TextIO, *, every: bool = False) -> int:
    now = time.time()
    if every:
        targets = [effect.id for effect in store.effects(OUTBOX_DEAD, limit=100_000)]
    else:
        targets = _ids(ids)
        if not targets:
            raise UsageError("name the dead letters to replay (IDs) or give --all", where="ID")
    replayed = 0
    for effect_id in targets:
        if store.replay_effect(effect_id, now):
            replayed += 1
        elif store.effect(effect_id) is None:
            raise NotFoundError(f"no effect {effect_id} in this state store", where="ID")
        else:
            out.write(f"effect {effect_id} is not a dead letter; left as it is\n")
    out.write(
        f"{replayed} {'effect' if replayed == 1 else 'effects'} queued again; a running "
        "serve performs them now\n"
    )
    return 0


def audit(store: Store, patient: str, out: TextIO, *, as_json: bool = False) -> int:
    ref = patient if patient.startswith("Patient/") else f"Patient/{patient}"
    if "/" in ref[len("Patient/") :] or ref == "Patient/":
        raise UsageError(f"'{patient}' is not a Patient id", where="PATIENT")
    records = store.audit(ref, limit=100_000)
    if as_json:
        for record in records:
            out.write(
                json.dumps(
                    {
                        "id": record.id,
                        "patient": record.patient,
                        "at": _when(record.at),
                        "backend": record.backend,
                        "rulesVersion": record.rules_version,
                        "mappingsVersion": record.mappings_version,
                        "inputs": list(record.inputs),
                        "outcome": list(record.outcome),
                        **record.extra,
                    }
                )
                + "\n"
            )
        return 0
    if not records:
        out.write(f"no decisions recorded for {ref}\n")
        return 0
    for record in records:
        out.write(
            f"{_when(record.at)}  {record.backend}  rules {record.rules_version}  "
            f"mappings {record.mappings_version}  ({len(record.inputs)} inputs)\n"
        )
        for line in record.outcome:
            out.write(f"    {line}\n")
        for ref_version in record.inputs:
            out.write(f"    input {ref_version}\n")
    return 0
