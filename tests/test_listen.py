"""Addresses to listen on (adapter/listen.py): what counts as the loopback, and HOST:PORT."""

from __future__ import annotations

import pytest

from adapter.errors import ConfigurationError
from adapter.listen import loopback, parse_listen


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),  # the whole 127/8 network
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),  # every interface
        ("::", False),
        ("10.0.0.5", False),
        ("ehr.example.org", False),  # a name: never taken on trust
        ("", False),
    ],
)
def test_what_counts_as_the_loopback(host: str, expected: bool) -> None:
    assert loopback(host) is expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("127.0.0.1:8770", ("127.0.0.1", 8770)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:2575", ("::1", 2575)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_host_and_port(raw: str, expected: tuple[str, int]) -> None:
    assert parse_listen(raw, "serve.listen") == expected


@pytest.mark.parametrize(
    "raw", ["8770", ":8770", "127.0.0.1:", "127.0.0.1:http", "h:65536", "h:-1"]
)
def test_a_bad_address_names_the_setting(raw: str) -> None:
    with pytest.raises(ConfigurationError, match="is not HOST:PORT") as caught:
        parse_listen(raw, "serve.listen")
    assert caught.value.where == "serve.listen"
    assert str(caught.value).startswith("serve.listen: ")
