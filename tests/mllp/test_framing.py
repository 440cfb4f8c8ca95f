"""MLLP framing: the decoder finds the same frames however the bytes are split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.mllp.framing import END, START, BadFrame, Decoder, Frame, frame


def _feed(decoder: Decoder, data: bytes, cuts: list[int]) -> list[object]:
    events: list[object] = []
    points = sorted({cut % (len(data) + 1) for cut in cuts})
    start = 0
    for point in [*points, len(data)]:
        events += decoder.feed(data[start:point])
        start = point
    return events


payloads = st.lists(
    st.binary(min_size=1, max_size=200).map(
        lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b"") or b"x"
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(payloads, st.lists(st.integers(min_value=0, max_value=5000), max_size=20))
def test_property_frames_survive_any_split(messages, cuts):
    data = b"\r\n".join(frame(message) for message in messages)
    events = _feed(Decoder(10_000), data, cuts)
    assert events == [Frame(message) for message in messages]


def test_an_end_block_split_across_reads():
    decoder = Decoder(100)
    assert decoder.feed(START + b"MSH|a\x1c") == []
    assert decoder.in_frame
    assert decoder.feed(b"\x0d") == [Frame(b"MSH|a")]
    assert not decoder.in_frame


def test_bytes_without_a_start_block_are_reported_then_framing_resumes():
    events = Decoder(100).feed(b"MSH|no start" + END + frame(b"MSH|ok"))
    assert events == [
        BadFrame("bytes outside an MLLP frame (no start block)", b"MSH|no start"),
        Frame(b"MSH|ok"),
    ]


def test_a_start_block_inside_an_open_frame():
    events = Decoder(100).feed(START + b"MSH|cut" + frame(b"MSH|next"))
    assert isinstance(events[0], BadFrame) and events[0].head == b"MSH|cut"
    assert events[1] == Frame(b"MSH|next")


def test_an_oversize_frame_is_reported_once_and_skipped_to_its_end():
    decoder = Decoder(10)
    events = decoder.feed(START + b"MSH|" + b"x" * 30)
    assert len(events) == 1 and "larger than 10 bytes" in events[0].reason  # type: ignore[union-attr]
    assert decoder.feed(b"y" * 50) == []
    assert decoder.feed(b"\x1c") == []
    assert decoder.feed(b"\x0d" + frame(b"MSH|ok")) == [Frame(b"MSH|ok")]


def test_junk_beyond_the_size_limit_is_reported_and_dropped():
    decoder = Decoder(10)
    events = decoder.feed(b"z" * 50)
    assert len(events) == 1 and isinstance(events[0], BadFrame)
    assert decoder.feed(frame(b"MSH|ok")) == [Frame(b"MSH|ok")]
