"""ORU^R01 -> FHIR R4 Observation JSON (the shapes ``adapter.fhir.read`` reads), per the HL7
v2-to-FHIR project's segment maps (OBX -> Observation, SPM -> Specimen, PID-3 -> identifier).

What is mapped: every OBX whose code (OBX-3: LOINC in the first or the alternate triplet, or a
local code through ``[[local_code]]``) is one the ANC rules read (``mappings/lab-codes.toml``).
Other results are left to the systems that want them.

- ``id`` and ``identifier`` are derived from the sender (MSH-3, MSH-4), the order (OBR-3 filler
  number, else OBR-2 placer number, with OBR-4; else MSH-10 and the OBR's position) and the
  result (its LOINC, OBX-4 sub-id and repeat), so a resend maps to the same Observation and a
  correction (OBX-11 C) updates it rather than adding one.
- ``status`` from OBX-11 through ``[status]``; ``effectiveDateTime`` from OBX-14, else OBR-7,
  else SPM-17; ``issued`` from OBR-22, else MSH-7.
- NM -> valueQuantity; SN -> valueQuantity (with ``comparator`` for ``<^0.1``), valueRange
  (``^1^-^5``) or valueRatio (``^1^:^128``); anything else -> valueString. Units (OBX-6) as
  UCUM code when the triplet says UCUM, and the text as sent (escapes decoded).
- ``specimen``: a contained Specimen per specimen (SPM-2 when the order has one SPM that names
  it, else the accession OBR-3, else the order), so only results of one specimen derive an ANC.
- ``subject``: a logical reference (``identifier`` only: PID-3 with the configured assigning
  authority); the pipeline fills ``reference`` once the EHR's Patient is known.

Pure: values in, values (or an :class:`Hl7v2Error` naming segment, field and reason) out.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any

from adapter.hl7v2.message import (
    DATA_TYPE_ERROR,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE,
    TABLE_VALUE_NOT_FOUND,
    UNSUPPORTED_EVENT,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_PROCESSING_ID,
    UNSUPPORTED_VERSION,
    Hl7v2Error,
    Location,
    Message,
    Segment,
)
from adapter.hl7v2.tables import LOINC, UCUM, Hl7v2Tables
from adapter.hl7v2.timestamps import fhir_datetime, fhir_instant

RESULT_IDENTIFIER_SYSTEM = "https://rems-adapter.github.io/fhir/sid/hl7v2-result"
LOCAL_SYSTEM_PREFIX = "urn:rems-adapter:hl7v2:coding-system:"
CATEGORY = {
    "coding": [
        {
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "laboratory",
        }
    ]
}
_NM = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)")


@dataclass(frozen=True)
class Options:
    """What a site configures about its lab feed (``[mllp]`` settings)."""

    #: PID-3 identifiers are taken only from this assigning authority (CX-4 namespace id or
    #: universal id): never a guess among others.
    assigning_authority: str
    #: The FHIR ``Patient.identifier.system`` those identifiers are; default ``urn:oid:`` + the
    #: authority's universal id when its type is ISO.
    identifier_system: str | None
    site_tz: tzinfo
    #: LOINC codes worth mapping (the ANC rules' codes).
    codes: frozenset[str]
    processing_ids: frozenset[str] = frozenset({"P"})
    #: Honour enhanced acknowledgement (MSH-15/16: commit ACKs, none when asked for none).
    #: Off by default: the contract is one ACK per message, AA / AE / AR, whatever they say.
    enhanced_acks: bool = False


@dataclass(frozen=True)
class Header:
    """What the ACK needs from MSH, read even from a message that fails later."""

    sending_application: tuple[tuple[str, ...], ...] = ()
    sending_facility: tuple[tuple[str, ...], ...] = ()
    receiving_application: tuple[tuple[str, ...], ...] = ()
    receiving_facility: tuple[tuple[str, ...], ...] = ()
    control_id: str = ""
    processing_id: str = ""
    version: str = ""
    event: str = ""
    accept_ack: str = ""  # MSH-15
    application_ack: str = ""  # MSH-16

    @property
    def key(self) -> str:
        """The deduplication key: MSH-3 | MSH-4 | MSH-10."""
        return "|".join(
            (_hd(self.sending_application), _hd(self.sending_facility), self.control_id)
        )

    @property
    def enhanced(self) -> bool:
        return bool(self.accept_ack or self.application_ack)


@dataclass(frozen=True)
class PatientKey:
    system: str
    value: str


@dataclass(frozen=True)
class MappedResult:
    patient: PatientKey
    observation: dict[str, Any]


@dataclass(frozen=True)
class OruMessage:
    header: Header
    results: tuple[MappedResult, ...]
    ignored: int = 0  # OBX segments that the ANC rules do not read
    notes: tuple[str, ...] = field(default=())


def _hd(components: Sequence[Sequence[str]]) -> str:
    return "^".join("&".join(sub) for sub in components).rstrip("^")


def header(message: Message) -> Header:
    msh = message.msh
    return Header(
        sending_application=msh.components(3),
        sending_facility=msh.components(4),
        receiving_application=msh.components(5),
        receiving_facility=msh.components(6),
        control_id=msh.value(10),
        processing_id=msh.value(11),
        version=msh.value(12),
        event=msh.value(9, 2),
        accept_ack=msh.value(15).upper(),
        application_ack=msh.value(16).upper(),
    )


def check_header(message: Message, head: Header, tables: Hl7v2Tables, options: Options) -> None:
    """MSH-9, -10, -11, -12: what decides whether the message is taken at all (AR)."""
    msh = message.msh
    code, event = msh.value(9, 1), msh.value(9, 2)
    if not head.control_id:
        raise Hl7v2Error(
            "MSH-10 (message control id) is empty",
            ack="AR",
            code=REQUIRED_FIELD_MISSING,
            location=msh.at(10),
        )
    if f"{code}^{event}" not in tables.message_types:
        known_codes = {name.split("^")[0] for name in tables.message_types}
        raise Hl7v2Error(
            f"MSH-9: this listener takes {', '.join(sorted(tables.message_types))}",
            ack="AR",
            code=UNSUPPORTED_EVENT if code in known_codes else UNSUPPORTED_MESSAGE_TYPE,
            location=msh.at(9, 2 if code in known_codes else 1),
        )
    if head.processing_id not in options.processing_ids:
        raise Hl7v2Error(
            f"MSH-11: processing id not accepted here (accepted: "
            f"{', '.join(sorted(options.processing_ids))})",
            ack="AR",
            code=UNSUPPORTED_PROCESSING_ID,
            location=msh.at(11),
        )
    if head.version not in tables.versions:
        raise Hl7v2Error(
            "MSH-12: HL7 version not supported",
            ack="AR",
            code=UNSUPPORTED_VERSION,
            location=msh.at(12),
        )


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode("utf-8")).hexdigest()


def _decimal(text: str, where: Location) -> Decimal:
    if not _NM.fullmatch(text):
        raise Hl7v2Error("not a number (NM)", code=DATA_TYPE_ERROR, location=where)
    try:
        return Decimal(text)
    except InvalidOperation as error:  # pragma: no cover - the pattern admits only numbers
        raise Hl7v2Error("not a number", code=DATA_TYPE_ERROR, location=where) from error


def _json_number(value: Decimal, where: Location) -> int | float:
    """A JSON number that reads back as exactly `value` (the reader takes a float by its
    shortest repr): no rounding, ever; more digits than that carries are refused."""
    if value == value.to_integral_value() and abs(value) < 2**53:
        return int(value)
    number = float(value)
    if Decimal(repr(number)) != value:
        raise Hl7v2Error(
            "more digits than a FHIR decimal carries here",
            code=DATA_TYPE_ERROR,
            location=where,
        )
    return number


class _Translator:
    def __init__(self, message: Message, head: Header, tables: Hl7v2Tables, options: Options):
        self.message = message
        self.head = head
        self.tables = tables
        self.options = options
        self.sender = f"{_hd(head.sending_application)}|{_hd(head.sending_facility)}"
        self.facility = message.msh.value(4)
        msh7 = message.msh.value(7)
        self.message_time = self._instant(msh7, message.msh.at(7)) if msh7 else None

    # ------------------------------------------------------------ fields

    def _datetime(self, raw: str, where: Location) -> str:
        try:
            return fhir_datetime(raw, self.options.site_tz)
        except ValueError as error:
            raise Hl7v2Error(
                "not an HL7 v2 date/time", code=DATA_TYPE_ERROR, location=where
            ) from error

    def _instant(self, raw: str, where: Location) -> str | None:
        try:
            return fhir_instant(raw, self.options.site_tz)
        except ValueError as error:
            raise Hl7v2Error(
                "not an HL7 v2 date/time", code=DATA_TYPE_ERROR, location=where
            ) from error

    def patient(self, pid: Segment) -> PatientKey:
        wanted = self.options.assigning_authority
        found: dict[str, tuple[str, ...]] = {}
        for repetition in pid.field(3):
            value = repetition[0][0] if repetition and repetition[0] else ""
            authority = repetition[3] if len(repetition) > 3 else ()
            if value and wanted and wanted in authority[:2]:
                found[value] = authority
        where = pid.at(3)
        if not found:
            raise Hl7v2Error(
                "no patient identifier from the assigning authority this site "
                "accepts (mllp.assigning_authority)",
                code=REQUIRED_FIELD_MISSING,
                location=where,
            )
        if len(found) > 1:
            raise Hl7v2Error(
                "two different identifiers from the one assigning authority; the "
                "patient is not guessed",
                code=DATA_TYPE_ERROR,
                location=where,
            )
        value, authority = next(iter(found.items()))
        system = self.options.identifier_system
        if system is None:
            universal = authority[1] if len(authority) > 1 else ""
            kind = authority[2] if len(authority) > 2 else ""
            if not universal or kind.upper() != "ISO":
                raise Hl7v2Error(
                    "the assigning authority has no OID; set mllp.patient_identifier_system",
                    code=REQUIRED_FIELD_MISSING,
                    location=where,
                )
            system = f"urn:oid:{universal}"
        return PatientKey(system, value)

    def code(self, obx: Segment) -> tuple[str | None, list[dict[str, str]]]:
        """(the LOINC code, the codings) of OBX-3."""
        components = obx.components(3)

        def leaf(index: int) -> str:
            return components[index][0] if len(components) > index and components[index] else ""

        codings: list[dict[str, str]] = []
        loinc: str | None = None
        local: list[tuple[str, str]] = []  # (code, coding system name) of the non-LOINC triplets
        for first in (0, 3):
            code, display, name = leaf(first), leaf(first + 1), leaf(first + 2)
            if not code:
                continue
            uri = self.tables.system_uri(name) if name else None
            if uri == LOINC and loinc is None:
                loinc = code
            coding = {"system": uri or f"{LOCAL_SYSTEM_PREFIX}{name or 'unnamed'}", "code": code}
            if display:
                coding["display"] = display
            codings.append(coding)
            if uri != LOINC:
                local.append((code, name))
        if loinc is None:
            # A site's [[local_code]] row names the LOINC only when the lab sent none: the lab's
            # own LOINC (in either triplet) is never overridden (segs 30451-9 stay not an ANC).
            for code, name in local:
                mapped = self.tables.local_loinc(code, name, self.facility)
                if mapped is not None:
                    loinc = mapped
                    codings.append({"system": LOINC, "code": mapped})
                    break
        codings.sort(key=lambda item: item["system"] != LOINC)  # LOINC first
        return loinc, codings

    def value(self, obx: Segment) -> dict[str, Any]:
        kind = obx.value(2).upper()
        repetitions = obx.field(5)
        texts = [
            "^".join("&".join(sub) for sub in repetition).rstrip("^&") for repetition in repetitions
        ]
        if not any(texts):
            return {}
        if not kind:
            where = obx.at(2)
            raise Hl7v2Error(
                "a value without a value type", code=REQUIRED_FIELD_MISSING, location=where
            )
        numeric = kind in self.tables.numeric or kind in self.tables.structured_numeric
        if numeric and len([text for text in texts if text]) > 1:
            where = obx.at(5)
            raise Hl7v2Error("a numeric value repeats", code=DATA_TYPE_ERROR, location=where)
        if kind in self.tables.numeric:
            where = obx.at(5)
            number = _json_number(_decimal(obx.value(5).strip(), where), where)
            return {"valueQuantity": {"value": number, **self.unit(obx)}}
        if kind in self.tables.structured_numeric:
            return self.structured(obx)
        return {"valueString": "~".join(text for text in texts if text)}

    def structured(self, obx: Segment) -> dict[str, Any]:
        comparator = obx.value(5, 1).strip()
        first, separator, second = (
            obx.value(5, 2).strip(),
            obx.value(5, 3).strip(),
            obx.value(5, 4).strip(),
        )
        unit = self.unit(obx)

        def number(text: str, component: int) -> int | float:
            where = obx.at(5, component)
            return _json_number(_decimal(text, where), where)

        if not separator and not second:
            if not first:
                where = obx.at(5, 2)
                raise Hl7v2Error("SN without a number", code=DATA_TYPE_ERROR, location=where)
            quantity: dict[str, Any] = {"value": number(first, 2), **unit}
            if comparator in ("", "="):
                return {"valueQuantity": quantity}
            if comparator in self.tables.comparators:
                return {"valueQuantity": {"comparator": comparator, **quantity}}
            return {"valueString": f"{comparator}{first}"}
        if separator == "-" and first and second and not comparator:
            return {
                "valueRange": {
                    "low": {"value": number(first, 2), **unit},
                    "high": {"value": number(second, 4), **unit},
                }
            }
        if separator in (":", "/") and first and second and not comparator:
            return {
                "valueRatio": {
                    "numerator": {"value": number(first, 2)},
                    "denominator": {"value": number(second, 4)},
                }
            }
        return {"valueString": f"{comparator}{first}{separator}{second}"}

    def unit(self, obx: Segment) -> dict[str, str]:
        components = obx.components(6)

        def leaf(index: int) -> str:
            return components[index][0] if len(components) > index and components[index] else ""

        code, text, name = leaf(0), leaf(1), leaf(2)
        alt_code, alt_name = leaf(3), leaf(5)
        if code and self.tables.system_uri(name) == UCUM:
            return {"unit": text or code, "system": UCUM, "code": code}
        if alt_code and self.tables.system_uri(alt_name) == UCUM:
            return {"unit": code or text or alt_code, "system": UCUM, "code": alt_code}
        shown = code or text
        return {"unit": shown} if shown else {}

    # ------------------------------------------------------------ the message

    def run(self) -> OruMessage:
        results: list[MappedResult] = []
        ignored = 0
        patient: PatientKey | None = None
        pid_seen = False
        order: Segment | None = None
        order_key = ""
        specimens: list[Segment] = []
        pending: list[tuple[Segment, list[dict[str, str]], Segment, str, PatientKey]] = []
        repeats: dict[tuple[str, str, str], int] = {}
        orders = 0

        def flush() -> None:
            if order is None:
                return
            for obx, codings, obr, key, person in pending:
                results.append(self.observation(obx, codings, obr, key, person, specimens))
            pending.clear()

        for segment in self.message.segments[1:]:
            if segment.name == "PID":
                flush()
                order, specimens = None, []
                patient, pid_seen = None, True
                patient = self.patient(segment)
            elif segment.name == "OBR":
                flush()
                if not pid_seen:
                    raise Hl7v2Error(
                        "an order before any PID (ORU^R01: PID first)",
                        code=SEGMENT_SEQUENCE,
                        location=segment.at(),
                    )
                order, specimens = segment, []
                order_key = self.order_key(segment)
            elif segment.name == "SPM":
                if order is None:
                    raise Hl7v2Error(
                        "a specimen outside an order",
                        code=SEGMENT_SEQUENCE,
                        location=segment.at(),
                    )
                specimens.append(segment)
            elif segment.name == "OBX":
                if order is None or patient is None:
                    raise Hl7v2Error(
                        "a result outside an order (OBR first)",
                        code=SEGMENT_SEQUENCE,
                        location=segment.at(),
                    )
                loinc, codings = self.code(segment)
                if not codings:
                    where = segment.at(3)
                    raise Hl7v2Error(
                        "the result has no code",
                        code=REQUIRED_FIELD_MISSING,
                        location=where,
                    )
                if loinc is None or loinc not in self.options.codes:
                    ignored += 1
                    continue
                sub_id = segment.value(4)
                count_key = (order_key, loinc, sub_id)
                repeats[count_key] = repeats.get(count_key, 0) + 1
                key = f"{loinc}|{sub_id}#{repeats[count_key]}"
                pending.append((segment, codings, order, key, patient))
            if segment.name == "OBR":
                orders += 1
        if not orders:
            # ORU^R01 requires at least one ORDER_OBSERVATION group: a message without an
            # OBR is malformed, never acknowledged as if its results had been stored.
            raise Hl7v2Error(
                "an ORU^R01 without any order (OBR): no result to take",
                code=SEGMENT_SEQUENCE,
                location=self.message.segments[0].at(),
            )
        flush()
        return OruMessage(self.head, tuple(results), ignored)

    def order_key(self, obr: Segment) -> str:
        """The order's identity, stable across resends and corrections: the filler number
        (else the placer number) and the service (OBR-4.1: a CBC and its differential may share
        one accession); else the message and the OBR's position."""
        service = obr.value(4)
        filler = _hd(obr.components(3))
        if filler:
            return f"filler:{filler}|{service}"
        placer = _hd(obr.components(2))
        if placer:
            return f"placer:{placer}|{service}"
        return f"message:{self.head.control_id}:obr{obr.sequence}"

    def specimen(self, obr: Segment, specimens: Sequence[Segment]) -> dict[str, Any]:
        """The specimen a result was measured on: SPM-2 when the order has one SPM naming it;
        else the accession (OBR-3: orders sharing it were drawn together); else the order."""
        named = _hd(specimens[0].components(2)) if len(specimens) == 1 else ""
        filler = _hd(obr.components(3))
        if named:
            identity = f"spm:{named}"
        elif filler:
            identity = f"accession:{filler}"
        else:
            identity = f"order:{self.order_key(obr)}"
        specimen: dict[str, Any] = {
            "resourceType": "Specimen",
            "id": "spm-" + _digest(self.sender, identity)[:24],
        }
        if named:
            specimen["identifier"] = [{"system": RESULT_IDENTIFIER_SYSTEM, "value": named}]
        if len(specimens) == 1 and specimens[0].value(17):
            spm = specimens[0]
            collected = self._datetime(spm.value(17), spm.at(17))
            specimen["collection"] = {"collectedDateTime": collected}
        return specimen

    def observation(
        self,
        obx: Segment,
        codings: list[dict[str, str]],
        obr: Segment,
        key: str,
        patient: PatientKey,
        specimens: Sequence[Segment],
    ) -> MappedResult:
        status_code = obx.value(11).strip().upper()
        if not status_code:
            where = obx.at(11)
            raise Hl7v2Error("no result status", code=REQUIRED_FIELD_MISSING, location=where)
        status = self.tables.status_of(status_code)
        if status is None:
            where = obx.at(11)
            raise Hl7v2Error(
                "result status not in HL7 table 0085",
                code=TABLE_VALUE_NOT_FOUND,
                location=where,
            )
        collected: str | None = None
        for segment, number in ((obx, 14), (obr, 7), *((spm, 17) for spm in specimens[:1])):
            # OBX-14, else OBR-7, else the order's (first) specimen's SPM-17
            raw = segment.value(number)
            if raw:
                collected = self._datetime(raw, segment.at(number))
                break
        order_key = self.order_key(obr)
        identifier = f"{self.sender}|{order_key}|{key}"
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": "v2-" + _digest(identifier)[:40],
            "identifier": [{"system": RESULT_IDENTIFIER_SYSTEM, "value": identifier}],
            "status": status,
            "category": [CATEGORY],
            "code": {"coding": codings},
            "subject": {"identifier": {"system": patient.system, "value": patient.value}},
        }
        if collected:
            resource["effectiveDateTime"] = collected
        reported = obr.value(22)
        issued = self._instant(reported, obr.at(22)) if reported else self.message_time
        if issued:
            resource["issued"] = issued
        resource.update(self.value(obx))
        specimen = self.specimen(obr, specimens)
        resource["contained"] = [specimen]
        resource["specimen"] = {"reference": f"#{specimen['id']}"}
        return MappedResult(patient, resource)


def translate(message: Message, head: Header, tables: Hl7v2Tables, options: Options) -> OruMessage:
    """The ORU^R01 `message` (its header checked) as FHIR Observations."""
    return _Translator(message, head, tables, options).run()
