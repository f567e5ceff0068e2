"""Shared test fixtures."""

from __future__ import annotations

import importlib

import pytest

from methods import registry


@pytest.fixture
def plugin_methods():
    """Register the throwaway methods of ``bench_test_methods`` for one test only.

    Registered methods join ``--methods all``, as a user's plugin methods should; tests that need
    throwaway ones register them here so they never leak into other tests' 'all'.
    """
    import bench_test_methods

    if "t-tiny" not in registry._REGISTRY:
        importlib.reload(bench_test_methods)
    yield bench_test_methods
    for name in ("t-tiny", "t-oom", "t-fail", "t-crash"):
        registry._REGISTRY.pop(name, None)
