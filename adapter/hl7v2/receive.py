"""One inbound HL7 v2 message -> its one ACK, with the durable write in between.

``Receiver(raw)`` decodes, parses and maps the message, hands the mapped results to ``store``
(which returns only once they are durably written, or raises) and only then builds ``AA``. A bad
message gets ``AE`` (content) or ``AR`` (refused: type, version, processing id, framing, or the
store failed, in which case the sender should resend) with the reason and place in ``ERR``. It
never raises: whatever happens, the caller gets the ACK to send (or None when the sender's
enhanced-mode MSH-15/16 ask for none).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from adapter.errors import AdapterError
from adapter.hl7v2 import ack
from adapter.hl7v2.ack import Outcome
from adapter.hl7v2.message import (
    APPLICATION_INTERNAL_ERROR,
    SEGMENT_SEQUENCE,
    Hl7v2Error,
    Location,
    decode,
    parse,
)
from adapter.hl7v2.oru import Header, Options, OruMessage, check_header, header, translate
from adapter.hl7v2.tables import Hl7v2Tables

#: Stores a mapped message durably (deduplicating on ``message.header.key``); raises on failure.
Store = Callable[[OruMessage], object]


def _salvage(raw: bytes) -> Header:
    """The header of a message that cannot be read whole, as far as its MSH can be."""
    try:
        first = raw[:4096].decode("latin-1").replace("\n", "\r").split("\r", 1)[0]
        return header(parse(first))
    except (Hl7v2Error, IndexError, ValueError):
        return Header()


@dataclass(frozen=True)
class Reply:
    """What became of one message: the ACK to send (None: the sender asked for none), MSA-1,
    whether the store took it, and the reason of a refusal (no PHI: safe to log)."""

    ack: bytes | None
    outcome: Outcome
    stored: bool = False
    reason: str | None = None
    control_id: str = ""


@dataclass
class Receiver:
    tables: Hl7v2Tables
    options: Options
    store: Store
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def _ack(
        self,
        head: Header,
        outcome: Outcome,
        error: Hl7v2Error | None = None,
        stored: bool = False,
    ) -> Reply:
        built = ack.build(head, outcome, self.clock(), error, self.options.enhanced_acks)
        return Reply(
            built.encode() if built is not None else None,
            outcome,
            stored,
            str(error) if error is not None else None,
            head.control_id,
        )

    def __call__(self, raw: bytes) -> Reply:
        head = Header()
        try:
            message = parse(decode(raw, self.tables))
            head = header(message)
            check_header(message, head, self.tables, self.options)
            mapped = translate(message, head, self.tables, self.options)
        except Hl7v2Error as error:
            if not head.control_id:
                head = _salvage(raw)
            return self._ack(head, error.ack, error)
        except Exception as error:  # a defect must not cost the sender its ACK
            return self._ack(
                head,
                "AR",
                Hl7v2Error(
                    f"internal error mapping the message ({type(error).__name__}); resend later",
                    ack="AR",
                    code=APPLICATION_INTERNAL_ERROR,
                ),
            )
        try:
            self.store(mapped)
        except Exception as error:
            kind = error.kind if isinstance(error, AdapterError) else type(error).__name__
            return self._ack(
                head,
                "AR",
                Hl7v2Error(
                    f"the results could not be stored ({kind}); resend later",
                    ack="AR",
                    code=APPLICATION_INTERNAL_ERROR,
                ),
            )
        return self._ack(head, "AA", stored=True)

    def bad_frame(self, reason: str, partial: bytes) -> Reply:
        """The ACK for bytes that were not one well-framed message (oversize, no start block):
        AR, naming the reason; MSA-2 when the MSH could be read."""
        head = _salvage(partial)
        error = Hl7v2Error(reason, ack="AR", code=SEGMENT_SEQUENCE, location=Location("MSH", 1))
        return self._ack(head, "AR", error)
