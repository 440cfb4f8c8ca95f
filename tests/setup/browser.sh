#!/usr/bin/env bash
# Browser for the report's end-to-end tests (tests/report/): Debian's chromium (never a
# browser build downloaded by Playwright), the Playwright Python client that drives it through
# `executable_path`, and axe-core from the npm registry for the accessibility check.
# Idempotent: does nothing that is already done. Called by tests/run-all.
set -euo pipefail
cd "$(dirname "$0")/../.."

AXE_VERSION="4.10.3"        # axe-core (MPL-2.0), pinned: the rules the a11y test applies
PLAYWRIGHT_SPEC="playwright>=1.48,<2"

if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    echo "== installing Debian chromium and chromium-driver"
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
fi

# The Python client only: PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD keeps it from fetching browsers.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if ! .venv/bin/python -c "import playwright" >/dev/null 2>&1; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check "$PLAYWRIGHT_SPEC"
fi

AXE_DIR="tests/.artefacts/axe-core-$AXE_VERSION"
if [ ! -f "$AXE_DIR/axe.min.js" ]; then
    echo "== fetching axe-core $AXE_VERSION from the npm registry"
    mkdir -p "$AXE_DIR"
    work="$(mktemp -d)"
    (cd "$work" && npm pack --silent "axe-core@$AXE_VERSION" >/dev/null)
    tar -xzf "$work"/axe-core-*.tgz -C "$work"
    cp "$work/package/axe.min.js" "$work/package/LICENSE" "$AXE_DIR/"
    rm -rf "$work"
fi
echo "browser: $(chromium --version 2>/dev/null | head -1); axe-core $AXE_VERSION in $AXE_DIR"
