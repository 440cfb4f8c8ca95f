#!/usr/bin/env bash
# Installs Debian's PostgreSQL server when its binaries are missing (a fresh machine, CI).
# Non-interactive; does nothing when initdb is already there. The tests then start a private
# server themselves (tests/setup/postgres.py: initdb into a temporary folder, a free port on
# 127.0.0.1, `runuser -u postgres` when run as root), never the system's own cluster.
set -euo pipefail

have_server() {
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null && id -u postgres >/dev/null 2>&1
}

if have_server; then
    exit 0
fi

echo "== installing Debian postgresql (server binaries missing)"
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "tests/setup/install-postgres.sh: PostgreSQL is not installed and this user cannot" \
        "install it; run as root: apt-get install postgresql" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -q
# the cluster Debian creates and starts is left alone: the tests start their own
"${as_root[@]}" apt-get install -y -q --no-install-recommends postgresql
have_server || {
    echo "tests/setup/install-postgres.sh: postgresql installed but initdb or the postgres user" \
        "is still missing" >&2
    exit 1
}
