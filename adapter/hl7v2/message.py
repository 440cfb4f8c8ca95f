"""An HL7 v2 message as plain values: python-hl7 parses, this module gives every field the same
shape and decodes the v2 escapes (``\\S\\`` and friends) after the split, where they belong.

A field is a tuple of repetitions, a repetition a tuple of components, a component a tuple of
subcomponents (strings, unescaped). Positions are 1-based as HL7 counts them: ``field(3)`` is
PID-3, and for MSH ``field(1)`` is the field separator itself, so MSH-10 is ``field(10)``.

Pure: bytes in, values or an :class:`Hl7v2Error` naming the place out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import lru_cache
from typing import Any, Literal

import hl7
from hl7.exceptions import HL7Exception

from adapter.errors import UnprocessableError
from adapter.hl7v2.tables import Hl7v2Tables

AckCode = Literal["AE", "AR"]

#: HL7 table 0357 (message error condition codes) used here.
SEGMENT_SEQUENCE = 100
REQUIRED_FIELD_MISSING = 101
DATA_TYPE_ERROR = 102
TABLE_VALUE_NOT_FOUND = 103
UNSUPPORTED_MESSAGE_TYPE = 200
UNSUPPORTED_EVENT = 201
UNSUPPORTED_PROCESSING_ID = 202
UNSUPPORTED_VERSION = 203
APPLICATION_INTERNAL_ERROR = 207

ERROR_TEXT = {
    SEGMENT_SEQUENCE: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    TABLE_VALUE_NOT_FOUND: "Table value not found",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    UNSUPPORTED_EVENT: "Unsupported event code",
    UNSUPPORTED_PROCESSING_ID: "Unsupported processing id",
    UNSUPPORTED_VERSION: "Unsupported version id",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

_SEGMENT_ID = re.compile(r"[A-Z][A-Z0-9]{2}")

Field = tuple[tuple[tuple[str, ...], ...], ...]


@dataclass(frozen=True)
class Location:
    """ERR-2 (ERL): segment id, its sequence in the message (1-based), field, component."""

    segment: str = ""
    sequence: int = 0
    field: int = 0
    component: int = 0

    def __str__(self) -> str:
        text = f"{self.segment}[{self.sequence}]" if self.sequence else self.segment
        if self.field:
            text += f"-{self.field}"
        if self.component:
            text += f".{self.component}"
        return text


class Hl7v2Error(UnprocessableError):
    """A message this source cannot take, with what the ACK says about it: ``ack`` (AE: the
    content is wrong, AR: the message is refused: type, version, processing id, or we could not
    store it), the table 0357 ``code`` and the ``location``. The message text never quotes a
    field's value (values belong to a person)."""

    def __init__(
        self, message: str, *, ack: AckCode = "AE", code: int, location: Location | None = None
    ) -> None:
        self.ack: AckCode = ack
        self.code = code
        self.location = location or Location()
        super().__init__(message, where=str(self.location) or None)


@dataclass(frozen=True)
class Segment:
    """One segment; its fields are split (and their escapes decoded) when first read."""

    name: str
    sequence: int  # 1-based count of this segment id in the message
    position: int  # 1-based index of the segment in the message
    raw: tuple[str, ...]  # raw[0] is the segment id; MSH-1 and MSH-2 as sent
    separators: tuple[str, str, str, str] = ("^", "~", "\\", "&")
    unescape: Any = None
    _parsed: dict[int, Field] = dataclass_field(default_factory=dict, compare=False, repr=False)

    @property
    def fields(self) -> tuple[Field, ...]:
        return tuple(self.field(number) for number in range(len(self.raw)))

    def field(self, number: int) -> Field:
        if not 0 <= number < len(self.raw):
            return ()
        found = self._parsed.get(number)
        if found is None:
            text = self.raw[number]
            if number == 0 or (self.name == "MSH" and number <= 2):
                found = (((text,),),)
            else:
                found = _field(text, self.separators, self.unescape)
            self._parsed[number] = found
        return found

    def value(self, number: int, component: int = 1, repetition: int = 1, sub: int = 1) -> str:
        """One leaf (unescaped), '' when absent."""
        field = self._parsed.get(number)
        if field is None:
            field = self.field(number)
        try:
            return field[repetition - 1][component - 1][sub - 1]
        except IndexError:
            return ""

    def components(self, number: int, repetition: int = 1) -> tuple[tuple[str, ...], ...]:
        field = self._parsed.get(number)
        if field is None:
            field = self.field(number)
        return field[repetition - 1] if len(field) >= repetition else ()

    def at(self, field: int = 0, component: int = 0) -> Location:
        return Location(self.name, self.sequence, field, component)


@dataclass(frozen=True)
class Message:
    segments: tuple[Segment, ...]
    encoding: str  # MSH-2 as sent

    @property
    def msh(self) -> Segment:
        return self.segments[0]


@lru_cache(maxsize=16)
def _escapes(separator: str, encoding: str) -> Any:
    """python-hl7's escape decoding for these encoding characters (MSH-1, MSH-2)."""
    return hl7.parse(f"MSH{separator}{encoding}{separator}")


def _field(raw: str, separators: tuple[str, str, str, str], unescape: Any) -> Field:
    """One field as repetitions of components of subcomponents, the escapes decoded."""
    component, repetition, escape, subcomponent = separators
    out = []
    for rep in raw.split(repetition) if repetition in raw else (raw,):
        components = []
        for comp in rep.split(component) if component in rep else (rep,):
            subs = comp.split(subcomponent) if subcomponent in comp else (comp,)
            if escape in comp:
                subs = [unescape(sub) if escape in sub else sub for sub in subs]
            components.append(tuple(subs))
        out.append(tuple(components))
    return tuple(out)


def decode(raw: bytes, tables: Hl7v2Tables) -> str:
    """The message text in the character set MSH-18 names (ASCII-compatible for the MSH)."""
    head = raw[:2048].decode("latin-1")
    charset = ""
    if head.startswith("MSH") and len(head) > 3:
        separator = head[3]
        first = head.replace("\n", "\r").split("\r", 1)[0]
        parts = first.split(separator)
        if len(parts) > 17:
            # MSH-18 repeats (the first repetition is the message's own character set), each a
            # code possibly with components
            encoding = parts[1]
            repetition = encoding[1:2] or "~"
            component = encoding[:1] or "^"
            charset = parts[17].split(repetition)[0].split(component)[0]
    codec = tables.codec(charset)
    if codec is None:
        raise Hl7v2Error(
            "MSH-18: character set not supported",
            ack="AR",
            code=TABLE_VALUE_NOT_FOUND,
            location=Location("MSH", 1, 18),
        )
    try:
        return raw.decode(codec)
    except UnicodeDecodeError as error:
        raise Hl7v2Error(
            f"the message is not valid {codec} text (byte {error.start})",
            code=DATA_TYPE_ERROR,
            location=Location("MSH", 1, 18),
        ) from error


def parse(text: str) -> Message:
    """Segments split on CR (LF and CR LF tolerated), checked for a leading MSH."""
    # the whole message is stripped of surrounding whitespace, as python-hl7 does
    text = text.strip()
    lines = [line for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r") if line]
    if not lines or not lines[0].startswith("MSH") or len(lines[0]) < 8:
        raise Hl7v2Error(
            "no MSH segment first", ack="AR", code=SEGMENT_SEQUENCE, location=Location("MSH", 1)
        )
    separator = lines[0][3]
    if separator.isalnum() or separator in "\r\n ":
        raise Hl7v2Error(
            "MSH-1: not a field separator",
            ack="AR",
            code=DATA_TYPE_ERROR,
            location=Location("MSH", 1, 1),
        )
    encoding = lines[0][4:].split(separator, 1)[0]
    if len(encoding) < 4 or len(set(encoding[:4])) < 4 or separator in encoding:
        raise Hl7v2Error(
            "MSH-2: needs four distinct encoding characters",
            ack="AR",
            code=DATA_TYPE_ERROR,
            location=Location("MSH", 1, 2),
        )
    for index, line in enumerate(lines):
        name = line[:3]
        if not _SEGMENT_ID.fullmatch(name):
            raise Hl7v2Error(
                "not a segment (a segment starts with a three-character id)",
                code=SEGMENT_SEQUENCE,
                location=Location(f"#{index + 1}"),
            )
        if len(line) > 3 and line[3] != separator:
            raise Hl7v2Error(
                f"segment {name}: the id is not followed by the field separator",
                code=SEGMENT_SEQUENCE,
                location=Location(name),
            )
    separators = (encoding[0], encoding[1], encoding[2], encoding[3])
    try:
        unescape = _escapes(separator, encoding).unescape
    except (HL7Exception, ValueError, IndexError) as error:
        raise Hl7v2Error(
            f"MSH-2: encoding characters python-hl7 cannot use ({type(error).__name__})",
            ack="AR",
            code=DATA_TYPE_ERROR,
            location=Location("MSH", 1, 2),
        ) from error
    counts: dict[str, int] = {}
    segments = []
    for position, line in enumerate(lines, start=1):
        name = line[:3]
        counts[name] = counts.get(name, 0) + 1
        parts = line.split(separator)
        if name == "MSH" and position == 1:
            parts = [name, separator, *parts[1:]]  # MSH-1 is the separator itself
        segments.append(Segment(name, counts[name], position, tuple(parts), separators, unescape))
    return Message(tuple(segments), encoding)
