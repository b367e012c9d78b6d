"""Imported once by the fork server that starts a run's worker processes (`harness.workers`),
so each worker starts with the engine already imported."""

from harness import execute  # noqa: F401  (everything a worker runs)
