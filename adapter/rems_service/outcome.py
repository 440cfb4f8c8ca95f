"""What an operation answers: a status, a body and the schema that body must satisfy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from adapter.rems import contract

from .reasons import ErrorKind, Reason


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    schema: str


def error(status: int, kind: ErrorKind, reasons: Sequence[Reason], message: str) -> Outcome:
    body = {"error": str(kind), "reasons": [str(reason) for reason in reasons], "message": message}
    return Outcome(status, body, contract.ERROR)


def rejected(kind: ErrorKind, reasons: Sequence[Reason], message: str) -> Outcome:
    """A well-formed request that the program's rules do not accept."""
    listed = ", ".join(str(reason) for reason in reasons)
    return error(422, kind, reasons, f"{message}: {listed}")
