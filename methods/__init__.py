"""Fine-tuning strategies, one module per strategy, behind one registry."""

from .registry import available, describe, get_method, register_method, select

__all__ = ["available", "describe", "get_method", "register_method", "select"]
