"""One pass over a traced step (usually under ``FakeTensorMode``: shapes, no data): its peak memory
by category, its FLOPs, and a roofline time for a GPU.

Why not torch's ``MemTracker`` and ``RuntimeEstimator``: MemTracker gives the same categories but
took 34 s to follow one BERT-base + ViT-base training step on 2 CPU cores (the fake step itself
takes 3.4 s; its per-module snapshots are the cost), and the estimate must cover six methods in
under a minute; RuntimeEstimator's roofline reads the GPU's peaks from ``torch.cuda``, which a
CPU-only build does not have. So this mode does the two things needed, per dispatched operator:
it follows every storage's allocation and release (a weak reference to it, as MemTracker does),
and it prices the operator with torch's own FLOP formulas (``flop_counter.flop_registry``, what
``FlopCounterMode`` uses) and the bytes it reads and writes.

Categories are decided after the trace, at the peak: weights and buffers (registered up front),
gradients (the storages the parameters' ``.grad`` hold at the end), optimizer state (allocated by
the optimizer step and held in its state), activations (allocated during the forward and still
alive: saved for backward) and temporary (the rest: backward intermediates, workspaces).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

CATEGORIES = ("weights", "buffers", "gradients", "optimizer", "activations", "temporary")
# operators that allocate nothing and move no bytes (aliases of their input)
VIEWS = {"view", "_unsafe_view", "reshape", "expand", "as_strided", "t", "transpose", "permute", "slice",
         "select", "alias", "detach", "unsqueeze", "squeeze", "split", "split_with_sizes", "unbind", "chunk",
         "narrow", "view_as", "unflatten", "flatten", "_reshape_alias", "lift_fresh", "empty_strided",
         "empty", "new_empty", "new_empty_strided", "_to_copy_view"}
MATMULS = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward", "_scaled_mm"}


@dataclass
class Alloc:
    nbytes: int
    start: int
    phase: str
    end: int | None = None
    category: str | None = None  # fixed up front (weights, buffers), else decided at the peak


@dataclass
class OpCost:
    name: str  # the aten operator
    kind: str  # matmul | attention | memory
    flops: float
    nbytes: float
    dtype: torch.dtype


@dataclass
class Trace:
    """What a traced region allocated and computed."""

    peak_bytes: int = 0
    at_peak: dict[str, int] = field(default_factory=dict)  # category -> bytes alive at the peak
    flops: float = 0.0
    ops: list[OpCost] = field(default_factory=list)

    @property
    def peak_gib(self) -> float:
        return self.peak_bytes / 2**30


def _storage(t: torch.Tensor):
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse and such: not traced
        return None


def _moved_bytes(tensors: Iterable[torch.Tensor]) -> float:
    """Bytes an operator reads or writes: each tensor's elements, but never more than its storage
    (an expanded bias has many elements over a small storage)."""
    total = 0.0
    for t in tensors:
        st = _storage(t)
        n = t.numel() * t.element_size()
        total += min(n, st.nbytes()) if st is not None else n
    return total


class Tracer(TorchDispatchMode):
    """Enter it (inside a fake mode) around the region; ``phase`` names what runs (forward,
    backward, optimizer, eval); ``result`` sweeps the allocations for the peak."""

    def __init__(self):
        super().__init__()
        self.step = 0
        self.phase = "forward"
        self.allocs: list[tuple[int, Alloc]] = []  # (storage key, allocation): every one ever made
        self._live: dict[int, Alloc] = {}  # a key is an address: reused once its storage is freed
        self._refs: dict[int, weakref.ref] = {}
        self.ops: list[OpCost] = []

    def hold(self, tensors: Iterable[torch.Tensor], category: str) -> None:
        """Tensors that exist before the region (weights, buffers, inputs), under ``category``."""
        for t in tensors:
            self._track(t, category)

    def _track(self, t: torch.Tensor, category: str | None = None) -> None:
        st = _storage(t)
        if st is None:
            return
        key = st._cdata
        if key in self._live and self._live[key].end is None:
            return
        alloc = self._live[key] = Alloc(st.nbytes(), self.step, self.phase, category=category)
        self.allocs.append((key, alloc))

        def freed(_ref, alloc=alloc):
            alloc.end = self.step
        self._refs[key] = weakref.ref(st, freed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.step += 1
        name = func._overloadpacket.__name__
        if name in VIEWS:
            return out
        outs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not outs:  # metadata (prim.device, sizes): no kernel, no traffic
            return out
        for t in outs:
            self._track(t)
        formula = flop_registry.get(func._overloadpacket)
        flops = float(formula(*args, **kwargs, out_val=out)) if formula is not None else 0.0
        ins = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        kind = "attention" if "attention" in name else "matmul" if name in MATMULS else "memory"
        dtype = outs[0].dtype if outs else torch.float32
        if kind != "memory" and ins:
            dtype = ins[0].dtype  # a matmul computes in its inputs' dtype (its output may be upcast)
        self.ops.append(OpCost(name, kind, flops, _moved_bytes(ins + outs), dtype))
        return out

    def result(self, grads: Iterable[torch.Tensor] = (), opt_state: Iterable[torch.Tensor] = ()) -> Trace:
        """The peak of live bytes and what was alive then, by category (see the module docstring)."""
        def held(tensors) -> set[int]:  # the allocations alive now behind these tensors
            keys = {st._cdata for t in tensors if (st := _storage(t)) is not None}
            return {id(self._live[k]) for k in keys if k in self._live}

        grad_ids, state_ids = held(grads), held(opt_state)
        events = []
        for _, a in self.allocs:
            events.append((a.start, 0, a.nbytes))
            if a.end is not None:
                events.append((a.end, 1, -a.nbytes))
        live = peak = 0
        peak_at = 0
        for when, _, delta in sorted(events):
            live += delta
            if live > peak:
                peak, peak_at = live, when
        at_peak = dict.fromkeys(CATEGORIES, 0)
        for _, a in self.allocs:
            if a.start <= peak_at and (a.end is None or a.end >= peak_at):  # as the sweep: frees after allocations
                at_peak[self._category(a, grad_ids, state_ids)] += a.nbytes
        return Trace(peak, at_peak, sum(o.flops for o in self.ops), list(self.ops))

    @staticmethod
    def _category(a: Alloc, grad_ids: set[int], state_ids: set[int]) -> str:
        if a.category is not None:
            return a.category
        if id(a) in grad_ids:
            return "gradients"
        if id(a) in state_ids:
            return "optimizer"
        return "activations" if a.phase == "forward" else "temporary"
