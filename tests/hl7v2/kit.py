"""Helpers for the HL7 v2 tests: options, a message builder, the vendored samples."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from adapter.fhir.read import Reader
from adapter.hl7v2.oru import Options
from adapter.hl7v2.receive import Receiver, Store
from adapter.hl7v2.tables import Hl7v2Tables
from adapter.mappings_loader import load_hl7v2_tables, load_reference_data

DATA = Path(__file__).resolve().parent.parent / "data" / "hl7v2"
AUTHORITY = "2.16.840.1.113883.3.72.5.30.2"  # the NIST samples' MPI
SYSTEM = f"urn:oid:{AUTHORITY}"
REFERENCE = load_reference_data()
TABLES = load_hl7v2_tables()
CODES = frozenset(
    REFERENCE.lab_codes.anc
    | REFERENCE.lab_codes.wbc
    | REFERENCE.lab_codes.neutrophil_pct
    | REFERENCE.lab_codes.segs_pct
    | REFERENCE.lab_codes.band_pct
)
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def options(**changes: object) -> Options:
    base: dict[str, object] = {
        "assigning_authority": AUTHORITY,
        "identifier_system": None,
        "site_tz": ZoneInfo("America/Los_Angeles"),
        "codes": CODES,
        "processing_ids": frozenset({"P", "T"}),
    }
    base.update(changes)
    return Options(**base)  # type: ignore[arg-type]


def sample(name: str) -> bytes:
    """A vendored message, its LF line ends turned into the CR segment separators of v2."""
    return (DATA / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r")


def receiver(store: Store, tables: Hl7v2Tables = TABLES, **changes: object) -> Receiver:
    return Receiver(tables, options(**changes), store, clock=lambda: NOW)


def reader() -> Reader:
    return Reader(REFERENCE, ZoneInfo("America/Los_Angeles"))


MSH = "MSH|^~\\&|LAB|NORTHLAB|REMS|PHARM|{time}||ORU^R01^ORU_R01|{control}|P|2.5.1{tail}"
PID = f"PID|1||MRN{{mrn}}^^^NORTH&{AUTHORITY}&ISO^MR||Doe^Jane||19800101|F"


def oru(
    *segments: str,
    control: str = "MSG0001",
    mrn: str = "1",
    time: str = "20260301090000-0800",
    tail: str = "",
    pid: bool = True,
) -> bytes:
    """An ORU^R01 built from `segments` (OBR/OBX/SPM lines), MSH and PID first."""
    lines = [MSH.format(time=time, control=control, tail=tail)]
    if pid:
        lines.append(PID.format(mrn=mrn))
    lines += segments
    return ("\r".join(lines) + "\r").encode("utf-8")


def obr(position: int = 1, filler: str = "F100", collected: str = "20260301083000-0800") -> str:
    return f"OBR|{position}|P{filler}^LAB|{filler}^LAB|57021-8^CBC^LN|||{collected}"


def obx(
    position: int,
    code: str,
    value: str,
    unit: str = "10*3/uL^thousand per microliter^UCUM",
    status: str = "F",
    kind: str = "NM",
    collected: str = "",
    sub_id: str = "",
) -> str:
    return f"OBX|{position}|{kind}|{code}|{sub_id}|{value}|{unit}|||||{status}|||{collected}"
