"""Plain words for codes, shared by the worklist, the charts and the tables."""

from __future__ import annotations

from adapter.core.findings import REASON_TEXT, cells

CATEGORY_WORDS: dict[str, str] = {
    "normal": "normal",
    "mild-neutropenia": "mild neutropenia",
    "moderate-neutropenia": "moderate neutropenia",
    "ben-neutropenia": "BEN neutropenia",
    "severe-neutropenia": "severe neutropenia",
}
FREQUENCY_WORDS: dict[str, str] = {
    "daily": "daily",
    "three-times-weekly": "three times weekly",
    "weekly": "weekly",
    "every-2-weeks": "every 2 weeks",
    "monthly": "monthly",
    "every-6-months": "every 6 months",
}
FREQUENCY_SHORT: dict[str, str] = {
    "daily": "daily",
    "three-times-weekly": "3×/week",
    "weekly": "weekly",
    "every-2-weeks": "2-weekly",
    "monthly": "monthly",
    "every-6-months": "6-monthly",
}
RECOMMENDATION_WORDS: dict[str, str] = {
    "continue": "continue clozapine",
    "interrupt": "interrupt clozapine",
    "may-resume": "clozapine may resume",
    "prescriber-decision-required": "rechallenge needs the prescriber's decision",
    "may-initiate": "clozapine may be started",
    "do-not-initiate": "do not start clozapine",
}
OUTCOME_WORDS: dict[str, str] = {
    "authorized": "authorized",
    "authorized-override": "authorized by override",
    "not-authorized": "NOT authorized",
    "pending": "pending (backend unreachable)",
}

__all__ = [
    "CATEGORY_WORDS",
    "FREQUENCY_SHORT",
    "FREQUENCY_WORDS",
    "OUTCOME_WORDS",
    "REASON_TEXT",
    "RECOMMENDATION_WORDS",
    "cells",
]
