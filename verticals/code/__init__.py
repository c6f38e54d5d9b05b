"""Code-assistant template (generation shape): Python functions from docstrings, checked by unit tests
in a sandbox; pass@1 (greedy) and pass@k (unbiased estimator) per difficulty."""

from verticals.code.template import CodeTemplate

__all__ = ["CodeTemplate"]
