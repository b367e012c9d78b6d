"""evals-harness: versioned, traced, offline-first evaluation of LLM and RAG features."""

__version__ = "0.1.0"

__all__ = ["__version__"]
