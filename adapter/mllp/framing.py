"""MLLP framing (HL7 v2.5.1 Appendix C, MLLP release 2 block format): ``0x0B`` payload
``0x1C 0x0D``. An incremental, bounded decoder: bytes in, frames or bad-frame events out.

- CR/LF/space between frames are ignored (some senders end a frame with an extra newline);
- other bytes outside a frame are reported once (``no start block``) when the next end block or
  start block shows where they stop, or when they pass the size limit;
- a start block inside an open frame reports the open frame as unterminated and starts anew;
- a frame over ``max_bytes`` is reported (with its first bytes, for the MSH) and the rest of it
  skipped up to its end block.
"""

from __future__ import annotations

from dataclasses import dataclass

START = b"\x0b"
END = b"\x1c\x0d"
_START = 0x0B
_FS = 0x1C
_CR = 0x0D
_BLANK = frozenset(b"\r\n \t")
#: How much of a bad frame is kept for the reply (enough for any MSH).
HEAD_BYTES = 4096


def frame(payload: bytes) -> bytes:
    return START + payload + END


@dataclass(frozen=True)
class Frame:
    payload: bytes


@dataclass(frozen=True)
class BadFrame:
    reason: str
    head: bytes  # the first bytes of what was received, for a reply naming MSH-10


Event = Frame | BadFrame


class Decoder:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._in_frame = False
        self._skipping = False  # inside an oversize frame, until its end block
        self._junk = bytearray()
        self._junk_size = 0
        self._tail = b""

    @property
    def in_frame(self) -> bool:
        """A frame is open (bytes received since its start block, no end block yet)."""
        return self._in_frame or self._skipping

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        index, size = 0, len(data)
        while index < size:
            if self._skipping:
                window = self._tail + data[index:]
                end = window.find(END)
                if end < 0:
                    self._tail = window[-1:]  # an end block may straddle two reads
                    return events
                self._skipping = False
                self._tail = b""
                return events + self.feed(window[end + 2 :])
            if self._in_frame:
                # the end block may straddle two reads: keep a trailing FS in the buffer
                self._buffer += data[index:]
                index = size
                events += self._drain_frame()
                continue
            byte = data[index]
            if byte == _START:
                if self._junk_size:
                    events.append(
                        BadFrame("bytes outside an MLLP frame (no start block)", bytes(self._junk))
                    )
                    self._junk.clear()
                    self._junk_size = 0
                self._in_frame = True
                self._buffer.clear()
                index += 1
                continue
            if byte in _BLANK and not self._junk_size:
                index += 1
                continue
            # junk: up to the next start or end block
            stop = len(data)
            for marker in (START, END):
                found = data.find(marker, index)
                if 0 <= found < stop:
                    stop = found
            chunk = data[index:stop]
            if len(self._junk) < HEAD_BYTES:
                self._junk += chunk[: HEAD_BYTES - len(self._junk)]
            self._junk_size += len(chunk)
            index = stop
            if data.startswith(END, index):
                events.append(
                    BadFrame("bytes outside an MLLP frame (no start block)", bytes(self._junk))
                )
                self._junk.clear()
                self._junk_size = 0
                index += 2
            elif self._junk_size > self.max_bytes:
                events.append(
                    BadFrame("bytes outside an MLLP frame (no start block)", bytes(self._junk))
                )
                self._junk.clear()
                self._junk_size = 0
        return events

    def _drain_frame(self) -> list[Event]:
        events: list[Event] = []
        while self._in_frame:
            buffer = self._buffer
            end = buffer.find(END)
            restart = buffer.find(START)
            if restart >= 0 and (end < 0 or restart < end):
                events.append(
                    BadFrame(
                        "a start block inside an open frame (no end block)",
                        bytes(buffer[: min(restart, HEAD_BYTES)]),
                    )
                )
                self._buffer = bytearray(buffer[restart + 1 :])
                continue
            if end < 0:
                if len(buffer) > self.max_bytes:
                    events.append(
                        BadFrame(
                            f"message larger than {self.max_bytes} bytes",
                            bytes(buffer[:HEAD_BYTES]),
                        )
                    )
                    self._in_frame = False
                    self._skipping = True
                    self._buffer = bytearray()
                return events
            if end > self.max_bytes:
                events.append(
                    BadFrame(
                        f"message larger than {self.max_bytes} bytes", bytes(buffer[:HEAD_BYTES])
                    )
                )
            else:
                events.append(Frame(bytes(buffer[:end])))
            rest = bytes(buffer[end + 2 :])
            self._in_frame = False
            self._buffer = bytearray()
            if rest:
                events += self.feed(rest)
            return events
        return events
