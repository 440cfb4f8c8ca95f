"""Self-contained HTML: the worklist and the patients' pages (no CDN, fonts or external script).

Three entry points share one page shell, one stylesheet and one small script:
``render_report`` (batch: the worklist and every patient's chart in one file),
``render_worklist`` and ``render_patient`` (serve: ``GET /`` and ``GET /patients/{id}``).
Everything is escaped; the output is deterministic (nothing depends on the wall clock).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from html import escape
from importlib import resources

from adapter import __version__
from adapter.core.protocol import Protocol
from adapter.report.chart import chart_spec, chart_window, render_svg, when
from adapter.report.view import GROUP_TITLE, GROUPS, PatientView, age_words
from adapter.report.words import (
    CATEGORY_WORDS,
    FREQUENCY_WORDS,
    OUTCOME_WORDS,
    REASON_TEXT,
    RECOMMENDATION_WORDS,
    cells,
)


@dataclass(frozen=True)
class ReportMeta:
    as_of: datetime
    site_tz: tzinfo
    protocol: Protocol
    title: str = "Clozapine ANC worklist"
    #: Where the decisions came from, in words ("batch run", "service state").
    source: str = "batch run"


def _asset(name: str) -> str:
    return resources.files("adapter.report").joinpath(name).read_text(encoding="utf-8")


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _page(meta: ReportMeta, title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="rems-adapter {_e(__version__)}">'
        # Nothing may be fetched: no network, no external fonts, scripts or images.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:\">"
        f"<title>{_e(title)}</title><style>{_asset('report.css')}</style></head>"
        f'<body><a class="skip" href="#main">Skip to content</a>'
        f"<header><h1>{_e(title)}</h1><p>Decisions as of "
        f"<strong>{_e(when(meta.as_of, meta.site_tz))}"
        f"</strong> (site time zone {_e(getattr(meta.site_tz, 'key', str(meta.site_tz)))}), from "
        f"the {_e(meta.source)}. ANC values in cells/µL. Shows FHIR ids, results and "
        "designations only: no names, birth dates or addresses.</p></header>"
        f'<main id="main">{body}</main>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def _anc(view: PatientView) -> str:
    if view.latest_anc is None:
        return "none"
    return cells(view.latest_anc) + (" (derived)" if view.latest_derived else "")


_DUE_WORDS = {
    "overdue": "OVERDUE",
    "grace": "past due, in grace",
    "today": "due today",
    "tomorrow": "due tomorrow",
    "later": "",
}


def _due(view: PatientView) -> str:
    state = _DUE_WORDS[view.due_state]
    return f"{view.next_due}" + (f" ({state})" if state else "")


def _population(view: PatientView) -> str:
    return "BEN" if view.population == "ben" else "general"


def _dispense(view: PatientView) -> str:
    if not view.dispenses:
        return "none awaiting"
    return "; ".join(OUTCOME_WORDS.get(d.outcome, d.outcome) for d in view.dispenses)


_SHORT_GROUP = {
    "not-authorized": "not authorized",
    "overdue": "overdue",
    "due-soon": "due soon",
    "repeat": "repeat ANC",
    "prescriber": "prescriber",
    "authorized": "authorized",
    "routine": "nothing due",
}

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Patient", "text"),
    ("Needs", "text"),
    ("Population", "text"),
    ("Hospice", "text"),
    ("Latest ANC", "number"),
    ("Collected", "text"),
    ("Category", "text"),
    ("Frequency", "text"),
    ("Next ANC due", "text"),
    ("Dispense", "text"),
    ("Why", "text"),
)


def _row(view: PatientView, href: str, tz: tzinfo) -> str:
    search = " ".join(
        [
            view.key,
            _population(view),
            "hospice" if view.hospice else "",
            CATEGORY_WORDS.get(view.category or "", ""),
            *(GROUP_TITLE[f] for f in view.flags),
            *view.reasons,
        ]
    ).lower()
    collected = (
        f'<span class="nowrap">{view.latest_collected.astimezone(tz):%Y-%m-%d}</span> '
        f'<span class="age">({_e(age_words(view.latest_age_days))})</span>'
        if view.latest_collected
        else "-"
    )
    needs = " ".join(f'<span class="tag">{_e(_SHORT_GROUP[f])}</span>' for f in view.flags)
    reasons = "".join(f"<li>{_e(r)}</li>" for r in view.notes)
    cells_ = [
        (f'<a href="{_e(href)}">{_e(view.key)}</a>', view.key),
        (needs, str(GROUPS.index((view.group, GROUP_TITLE[view.group])))),
        (_e(_population(view)), _population(view)),
        ("yes" if view.hospice else "no", "1" if view.hospice else "0"),
        (_e(_anc(view)), str(view.latest_anc) if view.latest_anc is not None else "-1"),
        (collected, view.latest_collected.isoformat() if view.latest_collected else ""),
        (
            _e(CATEGORY_WORDS.get(view.category or "", "none")),
            view.category or "",
        ),
        (_e(FREQUENCY_WORDS[view.frequency]), view.frequency),
        (
            f'<span class="nowrap">{view.next_due}</span>'
            + (
                f" <strong>{_e(_DUE_WORDS[view.due_state])}</strong>"
                if view.due_state != "later"
                else ""
            ),
            view.next_due.isoformat(),
        ),
        (_e(_dispense(view)), _dispense(view)),
        (f'<ul class="why">{reasons}</ul>', ""),
    ]
    tds = "".join(
        f'<td data-sort="{_e(sort)}">{content}</td>'
        if i
        else f'<th scope="row" data-sort="{_e(sort)}">{content}</th>'
        for i, (content, sort) in enumerate(cells_)
    )
    return (
        f'<tr data-patient="{_e(view.key)}" data-group="{_e(view.group)}" '
        f'data-flags="{_e(" ".join(view.flags))}" data-population="{_e(view.population)}" '
        f'data-hospice="{"yes" if view.hospice else "no"}" data-search="{_e(search)}">{tds}</tr>'
    )


def worklist_table(
    views: Sequence[PatientView], href: Callable[[PatientView], str], tz: tzinfo
) -> str:
    counts = {group: sum(1 for v in views if v.group == group) for group, _ in GROUPS}
    options = "".join(
        f'<option value="{_e(g)}">{_e(title)} ({sum(1 for v in views if g in v.flags)})</option>'
        for g, title in GROUPS
    )
    heads = "".join(
        f'<th scope="col" aria-sort="none" data-type="{kind}"><button type="button" '
        f'data-col="{i}">{_e(name)}<span class="arrow" aria-hidden="true"></span></button></th>'
        if name != "Why"
        else f'<th scope="col">{_e(name)}</th>'
        for i, (name, kind) in enumerate(_COLUMNS)
    )
    bodies = []
    for group, title in GROUPS:
        rows = [v for v in views if v.group == group]
        if not rows:
            continue
        bodies.append(
            f'<tbody data-group="{_e(group)}"><tr class="group"><th colspan="{len(_COLUMNS)}" '
            f'scope="rowgroup" id="group-{_e(group)}">{_e(title)} '
            f'<span class="count">({counts[group]})</span></th></tr>'
            + "".join(_row(v, href(v), tz) for v in rows)
            + "</tbody>"
        )
    summary = "; ".join(f"{GROUP_TITLE[g]}: {counts[g]}" for g, _ in GROUPS if counts[g])
    return (
        '<section aria-labelledby="worklist-h" id="worklist-section">'
        '<h2 id="worklist-h">Worklist</h2>'
        f'<p class="summary">{len(views)} patients on clozapine: {_e(summary)}. Each patient is '
        "listed once, under the first thing that needs doing; the Needs column lists them all. "
        "Column headings sort the rows within each group.</p>"
        '<form class="filters" role="search" aria-label="Filter the worklist" '
        'onsubmit="return false">'
        '<label for="filter-text">Search</label>'
        '<input id="filter-text" type="search" autocomplete="off" '
        'placeholder="patient, category, reason">'
        '<label for="filter-group">Needs</label>'
        f'<select id="filter-group"><option value="">anything</option>{options}</select>'
        '<label for="filter-population">Population</label>'
        '<select id="filter-population"><option value="">any</option>'
        '<option value="general">general</option><option value="ben">BEN</option></select>'
        '<span class="check"><input id="filter-hospice" type="checkbox">'
        '<label for="filter-hospice">hospice only</label></span>'
        '<button type="button" id="filter-reset">Show all</button>'
        f'<output id="filter-count" aria-live="polite" for="filter-text filter-group">'
        f"{len(views)} of {len(views)} patients shown</output></form>"
        f'<div class="scroll"><table id="worklist"><caption>Patients on clozapine by what needs '
        f"doing</caption><thead><tr>{heads}</tr></thead>{''.join(bodies)}</table></div></section>"
    )


# ------------------------------------------------------------------ one patient


def _fact(name: str, value: str) -> str:
    return f"<div><dt>{_e(name)}</dt><dd>{value}</dd></div>"


def _facts(view: PatientView, tz: tzinfo) -> str:
    latest = (
        f"{_e(_anc(view))} cells/µL, collected {_e(when(view.latest_collected, tz))} "
        f"({_e(age_words(view.latest_age_days))})"
        if view.latest_collected
        else "none on record"
    )
    facts = [
        _fact(
            "Population",
            _e("BEN (benign ethnic neutropenia table)" if view.population == "ben" else "general"),
        ),
        _fact("Hospice", "yes (ANC every 6 months in the normal range)" if view.hospice else "no"),
        _fact("Therapy start", _e(view.therapy_start or "not started")),
        _fact("Latest ANC", latest),
        _fact("Category", _e(CATEGORY_WORDS.get(view.category or "", "none"))),
        _fact("Recommendation", _e(RECOMMENDATION_WORDS[view.recommendation])),
        _fact("Monitoring", _e(FREQUENCY_WORDS[view.frequency])),
        _fact("Next ANC due", f"{_e(_due(view))}; current until {_e(view.current_until)}"),
    ]
    if view.repeat_by is not None:
        facts.append(_fact("Repeat ANC by", _e(when(view.repeat_by, tz))))
    if view.hematology_consult:
        facts.append(_fact("Hematology consult", "recommended"))
    if view.ben_baseline is not None:
        facts.append(_fact("BEN baseline", f"{_e(cells(view.ben_baseline))} cells/µL"))
    for line in view.dispenses:
        why = (
            ": " + "; ".join(REASON_TEXT.get(r, r) for r in line.reasons)
            if line.reasons and line.outcome != "authorized"
            else ""
        )
        days = f"{line.days_supply}-day " if line.days_supply is not None else ""
        facts.append(
            _fact(
                "Dispense awaiting decision",
                f"{_e(line.ref)} ({_e(days + line.setting)}): "
                f"<strong>{_e(OUTCOME_WORDS.get(line.outcome, line.outcome))}</strong>{_e(why)}",
            )
        )
    return f'<dl class="facts">{"".join(facts)}</dl>'


_LEGEND = (
    ('<circle cx="9" cy="9" r="5" fill="#1a1a1a"/>', "ANC used for decisions"),
    ('<path d="M9 3 L15 9 L9 15 L3 9 Z" fill="#1a1a1a"/>', "derived ANC (WBC × differential)"),
    (
        '<path d="M4 4 L14 14 M14 4 L4 14" stroke="#1a1a1a" stroke-width="2.5"/>',
        "unevaluable result (not used)",
    ),
    (
        '<rect x="4" y="4" width="10" height="10" fill="none" stroke="#1a1a1a" stroke-width="2"/>',
        "withdrawn result (entered in error or cancelled)",
    ),
    (
        '<rect x="1" y="5" width="16" height="8" fill="#6b6b6b" stroke="#1a1a1a"/>',
        "supply handed over",
    ),
    (
        '<rect x="1" y="5" width="16" height="8" fill="#fff" stroke="#1a1a1a" '
        'stroke-dasharray="3 2"/>',
        "supply the label did not allow",
    ),
    ('<path d="M3 5 L15 5 L9 14 Z" fill="#1a1a1a"/>', "dispense awaiting a decision: authorized"),
    (
        '<path d="M3 5 L15 5 L9 14 Z" fill="#fff" stroke="#1a1a1a" stroke-width="1.5"/>',
        "dispense awaiting a decision: not authorized",
    ),
    (
        '<rect x="1" y="3" width="16" height="12" fill="#e6e6e6" stroke="#1a1a1a"/>',
        "excursion below normal",
    ),
    (
        '<rect x="1" y="3" width="16" height="12" fill="#b3b3b3" stroke="#1a1a1a"/>',
        "treatment interrupted",
    ),
    (
        '<path d="M9 1 L9 17" stroke="#1a1a1a" stroke-width="2"/>',
        "next ANC due; shaded: grace window",
    ),
    ('<path d="M9 1 L9 17" stroke="#1a1a1a" stroke-dasharray="2 2"/>', "as of"),
    ('<path d="M1 9 L17 9" stroke="#1a1a1a" stroke-dasharray="6 3"/>', "BEN baseline"),
)


def _legend(ben: bool) -> str:
    items = "".join(
        f'<li><svg width="18" height="18" viewBox="0 0 18 18" aria-hidden="true">{glyph}</svg>'
        f"{_e(text)}</li>"
        for glyph, text in _LEGEND
        if ben or text != "BEN baseline"
    )
    return f'<ul class="legend" aria-label="Chart legend">{items}</ul>'


def _results_table(view: PatientView, tz: tzinfo) -> str:
    rows = []
    kinds = {
        "direct": "ANC",
        "derived": "derived ANC",
        "unevaluable": "unevaluable",
        "withdrawn": "withdrawn",
    }
    for point in view.history.results:
        reported = "; ".join(
            f"{r.value if r.value is not None else 'no value'} {r.unit or '(no unit)'}"
            for r in point.reported
        )
        value = cells(point.value_per_ul) if point.value_per_ul is not None else "-"
        rows.append(
            "<tr>"
            f"<td>{_e(when(point.collected, tz)) if point.collected else 'no collection time'}</td>"
            f"<td>{_e(kinds[point.kind])}</td>"
            f'<td class="num">{_e(value)}</td>'
            f"<td>{_e(reported or '-')}</td>"
            f"<td>{_e(CATEGORY_WORDS.get(point.category or '', '-'))}</td>"
            f"<td>{_e(FREQUENCY_WORDS.get(point.frequency or '', '-'))}</td>"
            f"<td>{_e(point.next_due or '-')}</td>"
            f"<td>{_e(', '.join(r.observation for r in point.reported) or point.observation)}</td>"
            f"<td>{_e(point.note or '')}</td>"
            "</tr>"
        )
    head = "".join(
        f'<th scope="col">{h}</th>'
        for h in (
            "Collected",
            "Kind",
            "ANC (cells/µL)",
            "As reported",
            "Category",
            "Monitoring then",
            "Next due then",
            "Source",
            "Note",
        )
    )
    return (
        f'<div class="scroll"><table class="data" id="results-{_e(view.key)}">'
        f"<caption>ANC results (the chart's data; every result, oldest first)</caption>"
        f"<thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(rows) or '<tr><td colspan=9>none</td></tr>'}"
        "</tbody></table></div>"
    )


def _events_table(view: PatientView, tz: tzinfo) -> str:
    history = view.history
    rows = []
    for s in history.supplies:
        rows.append(
            (
                s.start.isoformat(),
                "supply" if s.allowed else "supply NOT allowed by the label",
                f"{s.ref}: handed over {when(s.handed_over, tz)}, "
                f"{s.days_supply if s.days_supply is not None else 'unknown'} days "
                f"(to {s.end}), {s.setting}",
            )
        )
    for p in view.pending:
        rows.append(
            (
                p.time.astimezone(tz).date().isoformat(),
                "dispense awaiting a decision",
                f"{p.ref}: {OUTCOME_WORDS.get(p.outcome, p.outcome)}",
            )
        )
    for span in history.spans:
        what = "excursion" if span.kind == "excursion" else "treatment interrupted"
        worst = (
            f"; worst {CATEGORY_WORDS.get(span.label, span.label)}"
            if span.kind == "excursion"
            else ""
        )
        rows.append(
            (
                span.start.isoformat(),
                what,
                f"from {span.start} to {span.end or 'now (ongoing)'}{worst}",
            )
        )
    for step in history.frequency:
        rows.append(
            (
                step.start.isoformat(),
                "monitoring",
                f"{FREQUENCY_WORDS[step.frequency]} from {step.start} to {step.end}",
            )
        )
    for course in history.courses:
        rows.append(
            (
                course.on.isoformat(),
                "course of therapy",
                "restart as a new patient" if course.restart else "therapy start (first supply)",
            )
        )
    rows.append(
        (
            history.next_due.isoformat(),
            "next ANC due",
            f"current until {history.current_until} (grace)",
        )
    )
    rows.sort(key=lambda r: (r[0], r[1]))
    body = "".join(
        f"<tr><td>{_e(day)}</td><td>{_e(kind)}</td><td>{_e(text)}</td></tr>"
        for day, kind, text in rows
    )
    return (
        f'<div class="scroll"><table class="data" id="events-{_e(view.key)}">'
        "<caption>Supplies, dispenses, excursions, interruptions and monitoring over time</caption>"
        '<thead><tr><th scope="col">From</th><th scope="col">What</th><th scope="col">Detail</th>'
        f"</tr></thead><tbody>{body}</tbody></table></div>"
    )


def patient_section(view: PatientView, meta: ReportMeta, open_tables: bool = False) -> str:
    """One patient: facts, what needs doing, the chart, and its data as tables (collapsed
    unless ``open_tables``; opened for printing by the page's script)."""
    heading_level = 2
    tz = meta.site_tz
    h = f"h{heading_level}"
    sub = f"h{heading_level + 1}"
    first, last = chart_window(view.history, tz)
    spec = chart_spec(view.history, meta.protocol, view.population, tz, view.pending)  # type: ignore[arg-type]
    svg = render_svg(spec, f"c-{view.key}-")
    shown_points = sum(
        1
        for p in view.history.results
        if p.collected is not None and first <= p.collected.astimezone(tz).date()
    )
    earlier = len(view.history.results) - shown_points
    older = (
        f" {earlier} earlier result{'s' if earlier != 1 else ''} are in the table."
        if earlier > 0
        else ""
    )
    needs = "".join(f"<li>{_e(r)}</li>" for r in view.reasons)
    table = "BEN" if view.population == "ben" else "general population"
    tags = " ".join(
        f'<span class="tag">{_e(t)}</span>'
        for t in (["BEN"] if view.population == "ben" else [])
        + (["hospice"] if view.hospice else [])
        + [GROUP_TITLE[f] for f in view.flags]
    )
    return (
        f'<section class="patient" id="patient-{_e(view.key)}" data-patient="{_e(view.key)}" '
        f'aria-labelledby="title-{_e(view.key)}">'
        f'<{h} id="title-{_e(view.key)}">Patient {_e(view.key)} {tags}</{h}>'
        f"{_facts(view, tz)}"
        f'<{sub}>What needs doing</{sub}><ul class="reasons">{needs}</ul>'
        f"<{sub}>ANC over time</{sub}>"
        f'<figure class="chart" aria-describedby="caption-{_e(view.key)}">'
        f'<div class="svg">{svg}</div>'
        f'<figcaption id="caption-{_e(view.key)}">ANC (cells/µL) from {first} to {last} on a '
        f"time axis, with this patient's threshold bands ({_e(table)} table), supplies, "
        "excursions, interruptions, the monitoring frequency, the next due date and "
        f"its grace window. Hover, tap or focus (Tab) a mark to read it.{_e(older)}</figcaption>"
        f"{_legend(view.ben_baseline is not None)}</figure>"
        f'<details class="data"{" open" if open_tables else ""}><summary>Chart data: '
        f"{len(view.history.results)} ANC results (table)</summary>{_results_table(view, tz)}"
        f'</details><details class="data"{" open" if open_tables else ""}><summary>Supplies, '
        "excursions, interruptions and monitoring over time (table)</summary>"
        f"{_events_table(view, tz)}</details></section>"
    )


def render_report(views: Sequence[PatientView], meta: ReportMeta) -> str:
    """Batch: the worklist and every patient's section, one file."""
    table = worklist_table(views, lambda v: f"#patient-{v.key}", meta.site_tz)
    sections = "".join(patient_section(v, meta) for v in sorted(views, key=lambda v: v.patient))
    return _page(meta, meta.title, table + f'<div class="patients">{sections}</div>')


def render_worklist(
    views: Sequence[PatientView], meta: ReportMeta, href: Callable[[PatientView], str]
) -> str:
    """Serve ``GET /``: the worklist, each patient linking to their page."""
    return _page(meta, meta.title, worklist_table(views, href, meta.site_tz))


def render_patient(view: PatientView, meta: ReportMeta, back: str = "/") -> str:
    """Serve ``GET /patients/{id}``: one patient's page."""
    nav = f'<p class="back"><a href="{_e(back)}">← Back to the worklist</a></p>'
    return _page(
        meta, f"Patient {view.key}: ANC", nav + patient_section(view, meta, open_tables=True)
    )


__all__ = [
    "ReportMeta",
    "patient_section",
    "render_patient",
    "render_report",
    "render_worklist",
    "worklist_table",
]
