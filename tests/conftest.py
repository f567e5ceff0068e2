"""Shared test fixtures."""

from __future__ import annotations

import importlib

import pytest
from nvml_fake import FakePynvml, install_fake_cuda

from methods import registry


@pytest.fixture
def nv():
    """A fake ``pynvml`` with two GPUs (see ``nvml_fake``)."""
    return FakePynvml()


@pytest.fixture
def fake_cuda(nv, monkeypatch):
    """'CUDA' on the fake NVML's second GPU: a 300 MB context, allocator peaks the test sets."""
    return install_fake_cuda(nv, monkeypatch)


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
    for name in ("t-tiny", "t-oom", "t-fail", "t-crash", "t-rank-dies", "t-rank-oom"):
        registry._REGISTRY.pop(name, None)


@pytest.fixture(scope="session")
def ddp_reference(tmp_path_factory):
    """The TINY sweep of ``REFERENCE`` with dropout off, by 1 and by 2 processes (``--nproc``), run
    once for every test that compares against it (this file's and test_torchrun's): {n: folder}."""
    from test_distributed import REFERENCE, cfg_for, quiet

    from benchmark.launch.sweep import run_benchmark
    from methods.base import FAKE_STAGING_ENV

    root = tmp_path_factory.mktemp("ddp-reference")
    mp = pytest.MonkeyPatch()
    mp.setenv(FAKE_STAGING_ENV, "1")
    try:
        for n in (1, 2):
            run_benchmark(cfg_for(root / f"p{n}", REFERENCE, n, {"dropout": 0.0}), progress=False, echo=quiet)
    finally:
        mp.undo()
    return {n: root / f"p{n}" for n in (1, 2)}
