"""The reference REMS service: the 2021 Clozapine REMS rules over HTTP (clinical-rules.md s.3).

`serve(...)` runs it (the CLI's `rems-server`); `make_app(...)` builds the WSGI app for tests.
"""

from .app import make_app
from .server import BackgroundServer, serve

__all__ = ["BackgroundServer", "make_app", "serve"]
