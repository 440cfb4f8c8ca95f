"""The demo report in headless Debian Chromium: every patient is there, the worklist filters
and sorts, a patient's chart has its points, bands and tooltips, nothing is fetched, and
axe-core finds no serious or critical accessibility violation. Screenshots are saved under
tests/.artefacts/screenshots (the path is printed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from .browser import axe_violations, browser, offline_page, screenshot, screenshot_path
from .conftest import DemoRun


@pytest.fixture(scope="module")
def chrome() -> Iterator[Any]:
    with browser() as opened:
        yield opened


@pytest.fixture
def report(chrome: Any, demo_run: DemoRun) -> Iterator[tuple[Any, list[str]]]:
    requests: list[str] = []
    page = offline_page(chrome, requests)
    page.goto(demo_run.report.as_uri())
    yield page, requests
    page.context.close()


def _visible_keys(page: Any) -> list[str]:
    return page.eval_on_selector_all(
        "#worklist tbody tr[data-patient]:not([hidden])",
        "rows => rows.map(r => r.dataset.patient)",
    )


def test_every_patient_is_on_the_worklist_and_it_filters(
    report: tuple[Any, list[str]], demo_run: DemoRun
) -> None:
    page, requests = report
    expected = {row["patient"].removeprefix("Patient/") for row in demo_run.status}
    assert set(_visible_keys(page)) == expected
    assert len(_visible_keys(page)) == len(expected)
    count = page.locator("#filter-count")
    assert count.inner_text() == f"{len(expected)} of {len(expected)} patients shown"
    screenshot(page, "worklist", full_page=False)

    ben = {
        r["patient"].removeprefix("Patient/") for r in demo_run.status if r["population"] == "ben"
    }
    page.select_option("#filter-population", "ben")
    assert set(_visible_keys(page)) == ben
    assert count.inner_text() == f"{len(ben)} of {len(expected)} patients shown"
    screenshot(page, "worklist-ben", full_page=False)

    page.click("#filter-reset")
    overdue = {r["patient"].removeprefix("Patient/") for r in demo_run.status if r["overdue"]}
    page.select_option("#filter-group", "overdue")
    assert set(_visible_keys(page)) == overdue

    page.click("#filter-reset")
    page.check("#filter-hospice")
    hospice = {r["patient"].removeprefix("Patient/") for r in demo_run.status if r["hospice"]}
    assert set(_visible_keys(page)) == hospice

    page.click("#filter-reset")
    page.fill("#filter-text", "demo-15")
    assert _visible_keys(page) == ["demo-15"]
    # Groups with no visible row are hidden with it.
    assert page.locator("#worklist tbody:not([hidden])").count() == 1
    page.fill("#filter-text", "severe neutropenia")
    severe = {
        r["patient"].removeprefix("Patient/")
        for r in demo_run.status
        if r["category"] == "severe-neutropenia"
    }
    assert severe <= set(_visible_keys(page))
    assert requests == []


def test_columns_sort_within_each_group_from_the_keyboard(report: tuple[Any, list[str]]) -> None:
    page, _ = report
    button = page.locator("#worklist thead button", has_text="Latest ANC")
    button.focus()
    page.keyboard.press("Enter")
    header = page.locator("#worklist thead th:has(button:has-text('Latest ANC'))")
    assert header.get_attribute("aria-sort") == "ascending"
    for body in page.locator("#worklist tbody").all():
        values = _all(
            body,
            "tr[data-patient] td:nth-child(5)",
            "cells => cells.map(c => Number(c.dataset.sort))",
        )
        assert values == sorted(values)
    page.keyboard.press("Enter")
    assert header.get_attribute("aria-sort") == "descending"
    for body in page.locator("#worklist tbody").all():
        values = _all(
            body,
            "tr[data-patient] td:nth-child(5)",
            "cells => cells.map(c => Number(c.dataset.sort))",
        )
        assert values == sorted(values, reverse=True)


def _all(scope: Any, selector: str, script: str) -> Any:
    return scope.locator(selector).evaluate_all(script)


def _open_patient(page: Any, key: str) -> Any:
    page.click(f'#worklist a[href="#patient-{key}"]')
    assert page.evaluate("location.hash") == f"#patient-{key}"
    return page.locator(f"#patient-{key}")


def _points(section: Any) -> list[str]:
    return _all(
        section,
        "figure.chart svg [aria-roledescription='point'][aria-label^='ANC ']",
        "marks => marks.map(m => m.getAttribute('aria-label'))",
    )


def _svg_text(section: Any) -> str:
    return " ".join(_all(section, "figure.chart svg text", "t => t.map(x => x.textContent)"))


def _chart_rows(section: Any, first: str) -> int:
    """Rows of the chart's data table that are used ANCs collected in the chart's window."""
    section.locator("details.data summary").first.click()
    return _all(
        section,
        "table.data[id^=results] tbody tr",
        f"""rows => rows.filter(r => (r.cells[1].textContent === 'ANC' ||
            r.cells[1].textContent === 'derived ANC')
            && r.cells[0].textContent >= '{first}').length""",
    )


def test_a_patients_chart_has_its_points_bands_and_tooltips(report: tuple[Any, list[str]]) -> None:
    page, requests = report
    section = _open_patient(page, "demo-15")  # severe in February, awaiting the prescriber
    assert section.is_visible()
    caption = section.locator("figcaption").inner_text()
    first = caption.split(" from ")[1].split(" to ")[0]
    points = _points(section)
    section.screenshot(path=str(screenshot_path("chart-demo-15-severe-awaiting-prescriber")))
    assert len(points) == _chart_rows(section, first) > 5
    assert any(p.startswith("ANC 380 cells/µL (severe neutropenia)") for p in points)
    text = _svg_text(section)
    for band in (
        "normal (≥ 1,500)",
        "mild neutropenia (≥ 1,000)",
        "moderate neutropenia (≥ 500)",
        "severe neutropenia (< 500)",
    ):
        assert band in text
    assert "ANC due 2026-03-08" in text and "grace to 2026-03-10" in text
    lanes = _all(
        section, "figure.chart svg [aria-label]", "m => m.map(x => x.getAttribute('aria-label'))"
    )
    assert any(
        label.startswith("Excursion from 2026-02-09 to now; worst severe") for label in lanes
    )
    assert any(label.startswith("Treatment interrupted from 2026-02-09") for label in lanes)
    assert any(label.startswith("Monitoring daily") for label in lanes)
    assert any(label.startswith("Supply MedicationDispense/") for label in lanes)

    # Keyboard: Tab reaches the marks; focus shows value, unit as reported, time and source.
    mark = section.locator("figure.chart svg [aria-roledescription='point'][aria-label^='ANC 380']")
    mark.focus()
    tip = page.locator("#chart-tip")
    assert tip.is_visible()
    said = tip.inner_text()
    assert "ANC 380 cells/µL" in said and "reported 380 /uL" in said
    assert "collected 2026-02-09" in said and "source Observation/" in said
    section.scroll_into_view_if_needed()
    screenshot(page, "patient-demo-15-severe-awaiting-prescriber")
    page.keyboard.press("Escape")
    assert not tip.is_visible()
    # Tap / hover.
    mark.hover()
    assert tip.is_visible()
    assert requests == []


def test_ben_thresholds_baseline_and_a_hospice_patient(report: tuple[Any, list[str]]) -> None:
    page, _ = report
    ben = _open_patient(page, "demo-17")
    text = _svg_text(ben)
    assert "normal (≥ 1,000)" in text and "BEN neutropenia (≥ 500)" in text
    assert "BEN baseline" in text and "mild neutropenia" not in text
    ben.screenshot(path=str(screenshot_path("chart-demo-17-ben")))
    hospice = _open_patient(page, "demo-07")
    assert "every 6 months" in hospice.locator("dl.facts").inner_text()
    assert "normal (≥ 1,500)" in _svg_text(hospice)
    hospice.screenshot(path=str(screenshot_path("chart-demo-07-hospice")))


def test_unevaluable_and_withdrawn_results_are_marked_distinctly(
    report: tuple[Any, list[str]],
) -> None:
    page, _ = report
    labels = {
        key: _all(
            _open_patient(page, key),
            "figure.chart svg [aria-roledescription='point']",
            "m => m.map(x => [x.getAttribute('aria-label'), x.getAttribute('d')])",
        )
        for key in ("demo-27", "demo-24")
    }
    unevaluable = [d for label, d in labels["demo-27"] if label.startswith("Unevaluable ANC")]
    withdrawn = [d for label, d in labels["demo-24"] if label.startswith("Withdrawn ANC")]
    used = [d for label, d in labels["demo-24"] if label.startswith("ANC ")]
    assert len(unevaluable) == 1 and len(withdrawn) == 1
    assert "1400 10*3/uL" in next(t for t, _ in labels["demo-27"] if t.startswith("Unevaluable"))
    # Three different shapes (not colour): a cross, a square, a circle.
    assert len({unevaluable[0], withdrawn[0], used[0]}) == 3


def test_print_shows_every_table(report: tuple[Any, list[str]]) -> None:
    page, _ = report
    page.emulate_media(media="print")
    page.evaluate("window.dispatchEvent(new Event('beforeprint'))")
    closed = page.eval_on_selector_all("details:not([open])", "d => d.length")
    assert closed == 0
    assert not page.locator("form.filters").is_visible()
    page.emulate_media(media="screen")


def test_no_serious_accessibility_violation(report: tuple[Any, list[str]]) -> None:
    page, _ = report
    violations = axe_violations(page)
    assert violations == [], violations
