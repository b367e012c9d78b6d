"""`harness.worker_preload` plus litellm, for a run whose workers will call models: each
worker then starts with litellm imported instead of importing it itself (~2 s of CPU each)."""

import os

from harness import worker_preload  # noqa: F401
from harness.providers import litellm_module

_before = dict(os.environ)
litellm_module()
# What importing litellm added to the environment (it loads a `.env` file): a worker takes
# these, then the parent's environment over them (`harness.workers.child_main`).
ADDED_BY_IMPORT = {k: v for k, v in os.environ.items() if _before.get(k) != v}
