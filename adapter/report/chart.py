"""One patient's ANC chart: a Vega-Lite specification, rendered to inline SVG by vl-convert.

The chart is static SVG (no script needed to see it; it prints and works offline). Each result,
supply and pending dispense carries its description (value, unit as reported, collection time,
source) as the SVG ``aria-label`` Vega writes; the page's small script shows it on hover, tap
or keyboard focus. Nothing relies on colour alone: bands and lanes are labelled, result kinds
are different shapes, fills are grey levels with outlines and dash patterns.

Times are drawn as the site's wall-clock time on a UTC scale, so the drawing never depends on
the time zone of the machine that renders it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from typing import Any

import vl_convert

from adapter.core.history import PatientHistory, ResultPoint
from adapter.core.protocol import Population, Protocol
from adapter.report.words import CATEGORY_WORDS, FREQUENCY_SHORT, FREQUENCY_WORDS, cells

#: The Vega-Lite version vl-convert renders with (bundled in the wheel; pinned for stable output).
VEGA_LITE_VERSION = "6.4"

WIDTH = 720
ANC_HEIGHT = 230
LANE_HEIGHT = 24

#: Grey levels of the threshold bands, lightest for normal (AA text stays legible on each).
_BAND_FILL = ["#ffffff", "#ececec", "#d9d9d9", "#c4c4c4"]
_INK = "#1a1a1a"

#: How far back the chart looks (display only; the table below it lists every result).
WINDOW_DAYS = 120
#: Up to this many results in the window, each is labelled with its value; above, only the
#: latest and the lowest (every value is in the tooltip and the table).
LABEL_ALL_UP_TO = 10

LANES = ("Monitoring", "Supplies", "Excursion", "Interrupted", "Not used")


@dataclass(frozen=True)
class PendingMark:
    """A dispense awaiting a decision, with the decision made."""

    ref: str
    time: datetime
    outcome: str
    days_supply: int | None
    setting: str


def _wall(moment: datetime, tz: tzinfo) -> str:
    """The site's wall-clock time, written as UTC (see the module docstring)."""
    return moment.astimezone(tz).replace(tzinfo=None).isoformat(timespec="minutes") + "Z"


def _day(day: date) -> str:
    return datetime.combine(day, time()).isoformat(timespec="minutes") + "Z"


def when(moment: datetime, tz: tzinfo) -> str:
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z").strip()


def result_label(point: ResultPoint, tz: tzinfo) -> str:
    """What hover, tap and focus show for one result (and the table says too)."""
    collected = when(point.collected, tz) if point.collected else "no collection time"
    reported = "; ".join(
        f"{r.value if r.value is not None else 'no value'} {r.unit or '(no unit)'}"
        for r in point.reported
    )
    sources = ", ".join(r.observation for r in point.reported) or point.observation
    if point.kind in ("direct", "derived") and point.value_per_ul is not None:
        how = "derived from WBC and differential, " if point.kind == "derived" else ""
        category = CATEGORY_WORDS.get(point.category or "", "")
        return (
            f"ANC {cells(point.value_per_ul)} cells/µL ({category}); {how}reported {reported}; "
            f"collected {collected}; source {sources}"
        )
    what = "Unevaluable ANC" if point.kind == "unevaluable" else "Withdrawn ANC"
    return (
        f"{what}: reported {reported or 'nothing'}; {point.note}; collected {collected}; "
        f"source {sources}"
    )


def _y_top(history: PatientHistory, protocol: Protocol, population: Population) -> int:
    rules = protocol.rules(population)
    values = [p.value_per_ul for p in history.results if p.value_per_ul is not None]
    if history.ben_baseline is not None:
        values.append(history.ben_baseline)
    top = max([Decimal(rules.normal_min) * 2, *values])
    step = 500
    return int((top * Decimal("1.1") / step).to_integral_value(rounding="ROUND_CEILING")) * step


def _mid(start: date, end: date) -> str:
    middle = datetime.combine(start, time()) + (end - start) / 2
    return middle.isoformat(timespec="minutes") + "Z"


def _fits(text: str, start: date, end: date, first: date, last: date) -> bool:
    """Whether a lane label fits its bar (about 5.5 px a character at 9 px)."""
    days = max((last - first).days + 6, 1)
    return (end - start).days * WIDTH / days >= len(text) * 5.5 + 4


def chart_window(history: PatientHistory, tz: tzinfo) -> tuple[date, date]:
    """The first and last day the chart shows."""
    today = history.today
    dated = [p.collected.astimezone(tz).date() for p in history.results if p.collected]
    starts = dated + [s.start for s in history.supplies] + [s.start for s in history.spans]
    first = max(min(starts, default=today), today - timedelta(days=WINDOW_DAYS))
    first = min(first, today - timedelta(days=14))
    last = max([today, history.current_until, *(s.end for s in history.supplies)])
    # Not too far in the future: a long hospice interval would squash the history.
    last = min(last, max(today, history.current_until) + timedelta(days=7))
    return first, last


def chart_spec(
    history: PatientHistory,
    protocol: Protocol,
    population: Population,
    tz: tzinfo,
    pending: tuple[PendingMark, ...] = (),
) -> dict[str, Any]:
    """The Vega-Lite specification of one patient's chart."""
    today = history.today
    first, last = chart_window(history, tz)
    domain = [_day(first - timedelta(days=3)), _day(last + timedelta(days=3))]
    top = _y_top(history, protocol, population)
    x_axis = {
        "field": "x",
        "type": "temporal",
        "scale": {"type": "utc", "domain": domain},
        "axis": {"format": "%b %d", "title": None, "grid": False, "labelColor": _INK},
    }

    rules = protocol.rules(population)
    bands = []
    upper = top
    for index, band in enumerate(rules.bands):
        bands.append(
            {
                "lo": band.min,
                "hi": upper,
                "label": f"{CATEGORY_WORDS[band.category]} (≥ {cells(Decimal(band.min))})"
                if band.min
                else f"{CATEGORY_WORDS[band.category]} (< {cells(Decimal(upper))})",
                "fill": _BAND_FILL[min(index, len(_BAND_FILL) - 1)],
            }
        )
        upper = band.min

    shown = [
        p
        for p in history.results
        if p.value_per_ul is not None
        and p.collected is not None
        and p.collected.astimezone(tz).date() >= first - timedelta(days=3)
    ]
    label_all = len(shown) <= LABEL_ALL_UP_TO
    lowest = min(shown, key=lambda p: (p.value_per_ul, p.collected)) if shown else None
    usable = [
        {
            "x": _wall(p.collected, tz),
            "y": float(p.value_per_ul),
            "kind": "derived ANC" if p.kind == "derived" else "ANC",
            "shape": "diamond" if p.kind == "derived" else "circle",
            "value": cells(p.value_per_ul)
            if label_all or p is lowest or index == len(shown) - 1
            else "",
            "label": result_label(p, tz),
        }
        for index, p in enumerate(shown)
        if p.value_per_ul is not None and p.collected is not None
    ]
    not_used = [
        {
            "x": _wall(p.collected or datetime.combine(today, time(), tzinfo=tz), tz),
            "lane": "Not used",
            "kind": "unevaluable" if p.kind == "unevaluable" else "withdrawn",
            # an X (an SVG path in the symbol's unit square), and an empty square
            "shape": "M-1,-1L1,1M1,-1L-1,1" if p.kind == "unevaluable" else "square",
            "label": result_label(p, tz),
        }
        for p in history.results
        if p.kind in ("unevaluable", "withdrawn")
    ]
    spans = [
        {
            "x": _day(max(s.start, first - timedelta(days=3))),
            "x2": _day(s.end) if s.end else _day(today + timedelta(days=1)),
            "lane": "Excursion" if s.kind == "excursion" else "Interrupted",
            "kind": s.kind,
            "shade": 0.05 if s.kind == "excursion" else 0.08,
            "fill": "#e6e6e6" if s.kind == "excursion" else "#b3b3b3",
            "text": CATEGORY_WORDS.get(s.label, s.label) + ("" if s.end else " (ongoing)"),
            "label": f"{'Excursion' if s.kind == 'excursion' else 'Treatment interrupted'} "
            f"from {s.start} to {s.end or 'now'}"
            + (f"; worst {CATEGORY_WORDS.get(s.label, s.label)}" if s.kind == "excursion" else ""),
        }
        for s in history.spans
    ]
    supplies = [
        {
            "x": _day(max(s.start, first - timedelta(days=3))),
            "x2": _day(max(s.end, s.start + timedelta(days=1))),
            "lane": "Supplies",
            "kind": "supply" if s.allowed else "supply not allowed",
            "fill": "#6b6b6b" if s.allowed else "#ffffff",
            "dash": [1, 0] if s.allowed else [3, 2],
            "label": f"Supply {s.ref} handed over {when(s.handed_over, tz)}; "
            f"{s.days_supply if s.days_supply is not None else 'unknown'} days; {s.setting}"
            + ("" if s.allowed else "; handed over although the label did not allow it"),
        }
        for s in history.supplies
    ]
    marks_pending = [
        {
            "x": _wall(p.time, tz),
            "lane": "Supplies",
            "kind": f"dispense {p.outcome}",
            "fill": _INK if p.outcome in ("authorized", "authorized-override") else "#ffffff",
            "label": f"Dispense {p.ref} awaiting a decision: {p.outcome}; "
            f"{p.days_supply if p.days_supply is not None else 'unknown'} days; {p.setting}",
        }
        for p in pending
    ]
    steps = [
        {
            "x": _day(max(s.start, first - timedelta(days=3))),
            "x2": _day(max(s.end, s.start + timedelta(days=1))),
            "lane": "Monitoring",
            "xm": _mid(
                max(s.start, first - timedelta(days=3)), max(s.end, s.start + timedelta(days=1))
            ),
            # a label only where it fits (the tooltip and the table always say it)
            "text": FREQUENCY_SHORT[s.frequency]
            if _fits(FREQUENCY_SHORT[s.frequency], max(s.start, first), s.end, first, last)
            else "",
            "label": f"Monitoring {FREQUENCY_WORDS[s.frequency]} from {s.start} to {s.end}",
        }
        for s in history.frequency
    ]
    due = {
        "x": _day(history.next_due),
        "x2": _day(history.current_until + timedelta(days=1)),
        "today": _day(today),
        "text": f"ANC due {history.next_due}",
        "grace": f"grace to {history.current_until}",
    }

    y_anc = {
        "field": "y",
        "type": "quantitative",
        "scale": {"domain": [0, top], "nice": False},
        "axis": {"title": "ANC (cells/µL)", "labelColor": _INK, "titleColor": _INK},
    }
    anc_layers: list[dict[str, Any]] = [
        {
            "data": {"values": bands},
            "mark": {"type": "rect", "aria": False, "stroke": "#9a9a9a", "strokeWidth": 0.5},
            "encoding": {
                "y": {**y_anc, "field": "lo"},
                "y2": {"field": "hi"},
                "fill": {"field": "fill", "type": "nominal", "scale": None, "legend": None},
            },
        },
        {
            "data": {"values": bands},
            "mark": {
                "type": "text",
                "aria": False,
                "align": "left",
                "baseline": "top",
                "dx": 4,
                "dy": 3,
                "fontSize": 10,
                "color": _INK,
            },
            "encoding": {
                "x": {"datum": {"expr": f"toDate('{domain[0]}')"}, "type": "temporal"},
                "y": {"field": "hi", "type": "quantitative"},
                "text": {"field": "label"},
            },
        },
    ]
    if spans:
        anc_layers.append(
            {
                "data": {"values": spans},
                "mark": {"type": "rect", "aria": False},
                "encoding": {
                    "x": x_axis,
                    "x2": {"field": "x2"},
                    "fill": {"value": "#000000"},
                    "opacity": {"field": "shade", "type": "quantitative", "scale": None},
                },
            }
        )
    anc_layers += [
        {
            "data": {"values": [due]},
            "mark": {"type": "rect", "aria": False, "fill": "#000000", "opacity": 0.1},
            "encoding": {"x": x_axis, "x2": {"field": "x2"}},
        },
        {
            "data": {"values": [due]},
            "mark": {"type": "rule", "aria": False, "color": _INK, "strokeWidth": 2},
            "encoding": {"x": x_axis},
        },
        {
            "data": {"values": [due]},
            "mark": {
                "type": "text",
                "aria": False,
                "align": "right",
                "baseline": "top",
                "clip": False,
                "dx": -4,
                "dy": 3,
                "fontSize": 10,
                "color": _INK,
            },
            "encoding": {
                "x": x_axis,
                "y": {"datum": top},
                "text": {"field": "text"},
            },
        },
        {
            "data": {"values": [due]},
            "mark": {
                "type": "text",
                "aria": False,
                "align": "right",
                "baseline": "top",
                "clip": False,
                "dx": -4,
                "dy": 15,
                "fontSize": 10,
                "color": _INK,
            },
            "encoding": {
                "x": x_axis,
                "y": {"datum": top},
                "text": {"field": "grace"},
            },
        },
        {
            "data": {"values": [due]},
            "mark": {
                "type": "rule",
                "aria": False,
                "color": _INK,
                "strokeDash": [2, 2],
                "strokeWidth": 1,
            },
            "encoding": {"x": {**x_axis, "field": "today"}},
        },
    ]
    if history.ben_baseline is not None:
        baseline = {
            "y": float(history.ben_baseline),
            "text": f"BEN baseline {cells(history.ben_baseline)}",
        }
        anc_layers += [
            {
                "data": {"values": [baseline]},
                "mark": {"type": "rule", "aria": False, "color": _INK, "strokeDash": [8, 4]},
                "encoding": {"y": {"field": "y", "type": "quantitative"}},
            },
            {
                "data": {"values": [baseline]},
                "mark": {
                    "type": "text",
                    "aria": False,
                    "align": "left",
                    "baseline": "bottom",
                    "dx": 4,
                    "dy": -2,
                    "fontSize": 10,
                    "color": _INK,
                },
                "encoding": {
                    "x": {"datum": {"expr": f"toDate('{domain[0]}')"}, "type": "temporal"},
                    "y": {"field": "y", "type": "quantitative"},
                    "text": {"field": "text"},
                },
            },
        ]
    if usable:
        anc_layers += [
            {
                "data": {"values": usable},
                "mark": {"type": "line", "aria": False, "color": "#555555", "strokeWidth": 1.5},
                "encoding": {"x": x_axis, "y": {"field": "y", "type": "quantitative"}},
            },
            {
                "data": {"values": usable},
                "mark": {
                    "type": "point",
                    "filled": True,
                    "size": 90,
                    "opacity": 1,
                    "stroke": "#ffffff",
                    "strokeWidth": 1,
                },
                "encoding": {
                    "x": x_axis,
                    "y": {"field": "y", "type": "quantitative"},
                    "shape": {"field": "shape", "type": "nominal", "scale": None},
                    "color": {"value": _INK},
                    "description": {"field": "label"},
                },
            },
            {
                "data": {"values": usable},
                "mark": {
                    "type": "text",
                    "aria": False,
                    "dy": -11,
                    "fontSize": 9,
                    "color": _INK,
                },
                "encoding": {
                    "x": x_axis,
                    "y": {"field": "y", "type": "quantitative"},
                    "text": {"field": "value"},
                },
            },
        ]

    lane_y = {
        "field": "lane",
        "type": "nominal",
        "scale": {"domain": list(LANES)},
        "axis": {"title": None, "labelColor": _INK, "domain": False, "ticks": False},
    }
    lane_layers: list[dict[str, Any]] = [
        {
            "data": {"values": [{"lane": lane} for lane in LANES]},
            "mark": {"type": "rule", "aria": False, "color": "#bdbdbd", "strokeWidth": 0.5},
            "encoding": {"y": {**lane_y, "bandPosition": 1}},
        }
    ]
    if steps:
        lane_layers += [
            {
                "data": {"values": steps},
                "mark": {
                    "type": "rect",
                    "fill": "#ffffff",
                    "stroke": _INK,
                    "strokeWidth": 1,
                    "height": 16,
                },
                "encoding": {
                    "x": x_axis,
                    "x2": {"field": "x2"},
                    "y": lane_y,
                    "description": {"field": "label"},
                },
            },
            {
                "data": {"values": steps},
                "mark": {"type": "text", "aria": False, "fontSize": 9, "color": _INK},
                "encoding": {
                    "x": {**x_axis, "field": "xm"},
                    "y": lane_y,
                    "text": {"field": "text"},
                },
            },
        ]
    if supplies:
        lane_layers.append(
            {
                "data": {"values": supplies},
                "mark": {"type": "rect", "height": 14, "strokeWidth": 1.5},
                "encoding": {
                    "x": x_axis,
                    "x2": {"field": "x2"},
                    "y": lane_y,
                    "fill": {"field": "fill", "type": "nominal", "scale": None},
                    "stroke": {"value": _INK},
                    "strokeDash": {"field": "dash", "type": "nominal", "scale": None},
                    "description": {"field": "label"},
                },
            }
        )
    if marks_pending:
        lane_layers.append(
            {
                "data": {"values": marks_pending},
                "mark": {
                    "type": "point",
                    "shape": "triangle-down",
                    "size": 130,
                    "strokeWidth": 1.5,
                    "opacity": 1,
                },
                "encoding": {
                    "x": x_axis,
                    "y": lane_y,
                    "fill": {"field": "fill", "type": "nominal", "scale": None},
                    "stroke": {"value": _INK},
                    "description": {"field": "label"},
                },
            }
        )
    if spans:
        lane_layers += [
            {
                "data": {"values": spans},
                "mark": {"type": "rect", "height": 14, "stroke": _INK, "strokeWidth": 1},
                "encoding": {
                    "x": x_axis,
                    "x2": {"field": "x2"},
                    "y": lane_y,
                    "fill": {"field": "fill", "type": "nominal", "scale": None},
                    "description": {"field": "label"},
                },
            },
            {
                "data": {"values": spans},
                "mark": {
                    "type": "text",
                    "aria": False,
                    "align": "left",
                    "dx": 3,
                    "fontSize": 9,
                    "color": _INK,
                },
                "encoding": {
                    "x": x_axis,
                    "y": lane_y,
                    "text": {"field": "text"},
                },
            },
        ]
    if not_used:
        lane_layers.append(
            {
                "data": {"values": not_used},
                "mark": {"type": "point", "size": 110, "strokeWidth": 2, "opacity": 1},
                "encoding": {
                    "x": x_axis,
                    "y": lane_y,
                    "shape": {"field": "shape", "type": "nominal", "scale": None},
                    "filled": False,
                    "color": {"value": _INK},
                    "description": {"field": "label"},
                },
            }
        )
    lane_layers.append(
        {
            "data": {"values": [due]},
            "mark": {"type": "rule", "aria": False, "color": _INK, "strokeDash": [2, 2]},
            "encoding": {"x": {**x_axis, "field": "today"}},
        }
    )
    for layer in [*anc_layers, *lane_layers]:
        layer["mark"].setdefault("clip", True)
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v6.json",
        "config": {
            "font": "DejaVu Sans, Verdana, Arial, sans-serif",
            "view": {"stroke": "#9a9a9a"},
            "axis": {"labelFontSize": 11, "titleFontSize": 11},
        },
        "background": "#ffffff",
        "vconcat": [
            {
                "width": WIDTH,
                "height": ANC_HEIGHT,
                "layer": anc_layers,
            },
            {
                "width": WIDTH,
                "height": LANE_HEIGHT * len(LANES),
                "layer": lane_layers,
            },
        ],
        "resolve": {"scale": {"x": "shared"}},
    }


_ID = re.compile(r'\bid="([^"]+)"')
_REFERENCE = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


def render_svg(spec: dict[str, Any], prefix: str) -> str:
    """SVG markup for inline use. Vega numbers its clip paths with a counter of the rendering
    process; they are renamed ``prefix`` + their order in this chart, so that many charts share
    a page and the same chart always gives the same bytes. No external request is allowed."""
    svg = vl_convert.vegalite_to_svg(
        spec, vl_version=VEGA_LITE_VERSION, allowed_base_urls=[], show_warnings=False
    )
    names: dict[str, str] = {}
    for name in _ID.findall(svg):
        names.setdefault(name, f"{prefix}{len(names) + 1}")

    def rename(match: re.Match[str]) -> str:
        return match.group(1) + names.get(match.group(2), match.group(2))

    return _REFERENCE.sub(rename, svg)
