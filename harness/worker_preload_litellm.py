"""`harness.worker_preload` plus litellm, for a run whose workers will call models: each
worker then starts with litellm imported instead of importing it itself (~2 s of CPU each)."""

import contextlib
import os

from harness import worker_preload  # noqa: F401
from harness.providers import litellm_module

_before = dict(os.environ)
_litellm = litellm_module()
# litellm loads its default tokenizer on a process's first call (0.1-0.25 s before that call
# goes out); loaded here, once, every worker starts with it.
with contextlib.suppress(Exception):
    _litellm.main.encoding  # noqa: B018  (a lazy module attribute: reading it loads it)
# What importing litellm and its tokenizer added to the environment (tiktoken's cache
# directory, a `.env` the `evals` process has loaded too, see `harness.cli`): a worker takes
# these, then the parent's environment over them (`harness.workers.child_main`).
ADDED_BY_IMPORT = {k: v for k, v in os.environ.items() if _before.get(k) != v}
