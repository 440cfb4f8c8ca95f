"""The private PostgreSQL the tests start (tests/setup/postgres.py) is what the tests rely on:
reachable on 127.0.0.1 only, durable as in production, with password authentication, and
gone without a trace when stopped."""

from __future__ import annotations

import os
import socket

import psycopg
import pytest

from tests.setup.postgres import PostgresServer, start_postgres


def test_the_server_listens_on_loopback_only_and_commits_durably(postgres_server: PostgresServer):
    rows = dict(
        postgres_server.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'fsync', 'synchronous_commit', 'password_encryption', "
            "'unix_socket_directories')"
        )
    )
    assert rows["listen_addresses"] == "127.0.0.1"
    assert rows["fsync"] == "on" and rows["synchronous_commit"] == "on"
    assert rows["password_encryption"] == "scram-sha-256"
    assert rows["unix_socket_directories"] == str(postgres_server.socket_dir)
    if os.name == "posix" and hasattr(os, "geteuid") and os.geteuid() == 0:
        [(data,)] = postgres_server.execute("SELECT current_setting('data_directory')")
        assert os.stat(str(data)).st_uid != 0  # run as the postgres user, not as root


def test_each_test_database_is_new_and_the_password_is_required(
    postgres_server: PostgresServer, postgres_dsn: str
):
    another = postgres_server.create_database()
    assert another != postgres_dsn
    postgres_server.drop_database(another)
    with psycopg.connect(postgres_dsn) as connection:
        tables = connection.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ).fetchone()
    assert tables == (0,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(postgres_dsn.replace(postgres_server.password, "wrong"), connect_timeout=5)


def test_a_stopped_server_leaves_nothing_behind():
    server = start_postgres()
    root, port = server.root, server.port
    server.stop()
    assert not root.exists()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0  # nothing listens there any more
