"""Our field split agrees with python-hl7's parse (the reference) on every sample and on
generated messages; python-hl7 decodes the escapes in both."""

from __future__ import annotations

from typing import Any

import hl7
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapter.hl7v2.message import parse
from tests.hl7v2.kit import obr, obx, oru, sample

#: python-hl7 warns (deprecated `logger.warn`) on escape sequences it does not know
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _leaves(node: Any, message: Any) -> tuple[str, ...]:
    items = [node] if isinstance(node, str) else list(node)
    return tuple(message.unescape(str(item)) if "\\" in str(item) else str(item) for item in items)


def _reference(node: Any, message: Any) -> tuple[Any, ...]:
    """python-hl7 nests a plain field as [str], a structured one as [Repetition[Component]]."""
    if isinstance(node, str):
        return ((_leaves(node, message),),)
    items = list(node)
    if all(isinstance(item, str) for item in items):
        return (tuple(_leaves(item, message) for item in items),) if items else ()
    return tuple(
        (_leaves(rep, message),)
        if isinstance(rep, str)
        else tuple(_leaves(component, message) for component in rep)
        for rep in items
    )


def _agree(text: str) -> None:
    ours = parse(text)
    theirs = hl7.parse(text.replace("\n", "\r"))
    assert len(ours.segments) == len(theirs)
    for segment, reference in zip(ours.segments, theirs, strict=True):
        fields = list(reference)
        assert len(segment.raw) == len(fields)
        for number in range(1, len(fields)):
            if segment.name == "MSH" and number <= 2:
                continue
            assert segment.field(number) == _reference(fields[number], theirs), (
                segment.name,
                number,
            )


def test_the_samples_split_as_python_hl7_splits_them():
    for name in ("nist-lri-gu-002-cbc.hl7", "python-hl7-glucose.hl7", "hl7apy-adt-a01.hl7"):
        _agree(sample(name).decode())


leaf = st.text(alphabet="abcXYZ019 .-<\\", max_size=6).filter(lambda s: not s.endswith("\\"))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.lists(st.lists(leaf, min_size=1, max_size=3), min_size=1, max_size=3),
            min_size=1,
            max_size=3,
        ),
        min_size=1,
        max_size=8,
    )
)
def test_property_generated_fields_split_alike(fields):
    raw = [
        "~".join("^".join("&".join(subs) for subs in components) for components in repetitions)
        for repetitions in fields
    ]
    text = oru(obr(), obx(1, "751-8^ANC^LN", "1")).decode() + "ZZZ|" + "|".join(raw) + "\r"
    _agree(text)
