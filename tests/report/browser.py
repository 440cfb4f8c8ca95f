"""Headless Debian Chromium driven by Playwright (never a browser Playwright downloads).

tests/setup/browser.sh installs chromium, the Playwright client and axe-core; a missing piece
fails the tests that need it with the command to run (never a silent skip).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
ARTEFACTS = ROOT / "tests" / ".artefacts"
SCREENSHOTS = ARTEFACTS / "screenshots"
AXE_VERSION = "4.10.3"
AXE = ARTEFACTS / f"axe-core-{AXE_VERSION}" / "axe.min.js"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SETUP = "bash tests/setup/browser.sh"


def chromium_path() -> str:
    found = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if found is None:
        raise AssertionError(f"Debian chromium is not installed: run {SETUP}")
    return found


def axe_source() -> str:
    if not AXE.is_file():
        raise AssertionError(f"axe-core {AXE_VERSION} is not in {AXE.parent}: run {SETUP}")
    return AXE.read_text(encoding="utf-8")


@contextmanager
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # pragma: no cover - the setup installs it
        raise AssertionError(f"the Playwright client is not installed: run {SETUP}") from error
    with sync_playwright() as driver:
        chrome = driver.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield chrome
        finally:
            chrome.close()


def offline_page(chrome: Any, requests: list[str], **context: Any) -> Any:
    """A page that may fetch nothing but the page itself: every other request is recorded and
    refused, so a test can say the report needs no network."""
    ctx = chrome.new_context(viewport={"width": 1280, "height": 900}, **context)
    page = ctx.new_page()

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(("file://", "data:")) or route.request.is_navigation_request():
            route.continue_()
        else:
            requests.append(url)
            route.abort()

    page.route("**/*", guard)
    return page


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    print(f"screenshot: {path}")
    return path


def screenshot(page: Any, name: str, **options: Any) -> Path:
    """A screenshot of the page (or of ``options``' clip) saved as a test artefact."""
    path = screenshot_path(name)
    page.screenshot(path=str(path), **options)
    return path


def axe_violations(page: Any) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page (WCAG 2.x A and AA rules)."""
    page.add_script_tag(content=axe_source())
    result = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: {type: 'tag',
                values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}});
            return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}));
        }"""
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]
