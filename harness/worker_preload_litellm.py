"""`harness.worker_preload` plus litellm, for a run whose workers will call models: each
worker then starts with litellm imported instead of importing it itself (~2 s of CPU each)."""

from harness import worker_preload  # noqa: F401
from harness.providers import litellm_module

litellm_module()
