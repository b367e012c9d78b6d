"""`evals view`: a local web app over the run and span stores, for error analysis.

`create_app(ViewerConfig(...))` returns the ASGI app; `harness.cli_view` serves it with uvicorn.
"""

from harness.viewer.app import ViewerConfig, create_app

__all__ = ["ViewerConfig", "create_app"]
