"""Addresses to listen on: `HOST:PORT` as written in settings and flags, and whether a host is
the loopback (where the endpoints without authentication may listen)."""

from __future__ import annotations

from ipaddress import ip_address

from adapter.errors import ConfigurationError


def loopback(host: str) -> bool:
    """`localhost`, or an address of the loopback network (IPv4 or IPv6, brackets allowed)."""
    if host == "localhost":
        return True
    try:
        return ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_listen(raw: str, where: str) -> tuple[str, int]:
    """(host, port) of `raw` (`HOST:PORT`, `[IPv6]:PORT`); `where` names the setting at fault."""
    host, sep, port = raw.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigurationError(f"'{raw}' is not HOST:PORT", where=where)
    return host.strip("[]"), int(port)
