"""The pharmacist's worklist and ANC charts (issue 15): self-contained HTML from the decisions.

``view`` turns decisions into what is shown (pure), ``chart`` draws one patient's ANC chart as
inline SVG (Vega-Lite rendered by vl-convert, offline), ``html`` writes the pages.
"""
