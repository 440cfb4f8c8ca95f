"""How more sources and pages plug into `serve` (Subscriptions, MLLP, the worklist).

    class Mllp(Extension):
        name = "mllp"
        def start(self, context: ServeContext) -> None:   # open the listener
            ...context.pipeline.intake.receive([...])
        def stop(self) -> None: ...

    class Worklist(Extension):
        name = "worklist"
        def routes(self, app: Flask, context: ServeContext) -> None:
            app.add_url_rule("/", "worklist", view)       # GET / and /patients/<id>

`adapter.serve.app.build_app(context, extensions)` calls `routes` of each before serving; the
service calls `start` after the pipeline runs and `stop` before it stops. Routes added by an
extension get the same guards as the built-in ones (bearer token, size and rate limits,
OperationOutcome errors); list a path in `open_paths` to serve it without the token (probes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask

    from adapter.pipeline import Pipeline


@dataclass
class ServeContext:
    """What an extension may use: the pipeline (intake, store, metrics, EHR client factory),
    the evaluation settings, and the effective settings."""

    pipeline: Pipeline
    settings: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class Extension:
    name: str = "extension"
    #: paths served without the bearer token
    open_paths: tuple[str, ...] = ()

    def routes(self, app: Flask, context: ServeContext) -> None:
        """Add Flask routes."""

    def start(self, context: ServeContext) -> None:
        """Start listeners or background jobs (called once the pipeline runs)."""

    def stop(self) -> None:
        """Stop them (bounded)."""
