"""General acknowledgement messages (HL7 v2.5.1 section 2.9, 2.14.1 MSA, 2.14.5 ERR).

Original mode: one application ACK, ``AA`` / ``AE`` / ``AR``, for every message (the default,
whatever MSH-15 and MSH-16 say: the interface contract is exactly one ACK per message, and
real senders fill MSH-15/16 with ``AL``/``NE`` while waiting for their ``AA``).
Enhanced mode (``mllp.enhanced_acks`` on, and MSH-15 or MSH-16 present): the receiving system
answers on the connection with a commit ACK (``CA`` / ``CE`` / ``CR``) when MSH-15 asks for it
in that case (``AL`` always, ``ER`` on error, ``SU`` on success, ``NE`` never; empty means
``AL``). The commit ACK is sent only after the durable write, so it promises what ``AA`` does.
Application ACKs of enhanced mode travel as separate messages to the sender's own listener,
which this source does not open: when MSH-15 asks for none but MSH-16 asks for one in that
case, that application ACK is sent on the connection instead; when neither asks, nothing is
sent.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Literal

from adapter.hl7v2.message import ERROR_TEXT, Hl7v2Error
from adapter.hl7v2.oru import Header
from adapter.hl7v2.timestamps import v2_timestamp

Outcome = Literal["AA", "AE", "AR"]
_COMMIT = {"AA": "CA", "AE": "CE", "AR": "CR"}
#: This listener's own MSH-3 when the sender named no receiving application.
APPLICATION = "rems-adapter"


@dataclass(frozen=True)
class Ack:
    code: str  # MSA-1
    text: str  # the ER7 message, segments separated by CR

    def encode(self) -> bytes:
        return self.text.encode("utf-8")


def escape(text: str) -> str:
    """A value made safe for a field written with the standard encoding characters."""
    return (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
        .replace("\r", " ")
        .replace("\n", " ")
    )


def _hd(components: tuple[tuple[str, ...], ...]) -> str:
    return "^".join("&".join(escape(sub) for sub in component) for component in components).rstrip(
        "^"
    )


@lru_cache(maxsize=256)
def _addresses(head: tuple[tuple[tuple[str, ...], ...], ...]) -> str:
    """MSH-3 to MSH-6 of the ACK: the message's receiver and sender swapped (a feed sends the
    same ones every time: built once per feed, not per message)."""
    receiving_application, receiving_facility, sending_application, sending_facility = head
    return "|".join(
        (
            _hd(receiving_application) or APPLICATION,
            _hd(receiving_facility),
            _hd(sending_application),
            _hd(sending_facility),
        )
    )


def _wanted(condition: str, success: bool) -> bool:
    condition = condition or "AL"
    return (
        condition == "AL" or (condition == "ER" and not success) or (condition == "SU" and success)
    )


def answer_code(head: Header, outcome: Outcome, enhanced: bool = False) -> str | None:
    """MSA-1 of the one ACK to send, or None when the sender asked for none (enhanced mode,
    when honoured)."""
    if not (enhanced and head.enhanced):
        return outcome
    success = outcome == "AA"
    if head.accept_ack != "NE" and _wanted(head.accept_ack, success):
        return _COMMIT[outcome]
    if head.application_ack and _wanted(head.application_ack, success):
        return outcome
    return None


def build(
    head: Header,
    outcome: Outcome,
    now: datetime,
    error: Hl7v2Error | None = None,
    enhanced: bool = False,
) -> Ack | None:
    """The ACK for a message with header `head` (None: the sender asked for none, and
    `enhanced` acknowledgement is honoured)."""
    code = answer_code(head, outcome, enhanced)
    if code is None:
        return None
    control = hashlib.sha256(f"{head.key}|{code}".encode()).hexdigest()[:20].upper()
    msh = "|".join(
        (
            "MSH",
            "^~\\&",
            _addresses(
                (
                    head.receiving_application,
                    head.receiving_facility,
                    head.sending_application,
                    head.sending_facility,
                )
            ),
            v2_timestamp(now),
            "",
            f"ACK^{escape(head.event)}^ACK" if head.event else "ACK",
            control,
            escape(head.processing_id) or "P",
            escape(head.version) or "2.5.1",
        )
    )
    segments = [msh]
    text = escape(error.message)[:200] if error is not None else ""
    segments.append("|".join(("MSA", code, escape(head.control_id), text)).rstrip("|"))
    if error is not None:
        where = error.location
        component = str(where.component) if where.component else ""
        location = "^".join(
            (
                escape(where.segment),
                str(where.sequence) if where.sequence else "",
                str(where.field) if where.field else "",
                "1" if where.field else "",
                component,
            )
        ).rstrip("^")
        legacy = "^".join(
            (
                escape(where.segment),
                str(where.sequence) if where.sequence else "",
                str(where.field) if where.field else "",
                f"{error.code}&{escape(ERROR_TEXT.get(error.code, ''))}&HL70357",
            )
        )
        segments.append(
            "|".join(
                (
                    "ERR",
                    legacy,  # ERR-1 (v2.3/2.4 senders read this one)
                    location,  # ERR-2
                    f"{error.code}^{escape(ERROR_TEXT.get(error.code, ''))}^HL70357",  # ERR-3
                    "E",  # ERR-4 severity
                    "",
                    "",
                    escape(error.message)[:200],  # ERR-7 diagnostic information
                )
            )
        )
    return Ack(code, "\r".join(segments) + "\r")
