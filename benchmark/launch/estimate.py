"""Predicted memory (per phase, by category) and step time of a method on a GPU it has not run on.

How: the method's real model is built by the one factory on the meta device (no weights), its
tensors are re-made as fake tensors (``FakeTensorMode``: shapes and dtypes, no memory), and the
real trainer's real step runs on them: the loss forward on the epoch's largest bucketed step (the
training peak), backward, the optimizer step; then one chunk of the evaluation's item table and
one batch of users ranked; for iisan-cached also one build batch of the cache. ``Tracer`` follows
every storage and prices every operator. Nothing here is a per-method formula: a new method gets
an estimate by being buildable.

Why a fake CPU device and not a fake CUDA one: a CPU-only torch build cannot place fake tensors on
CUDA (random init and autocast both need the CUDA runtime). What a GPU does differently is put
back explicitly: attention runs as the fused kernel a GPU dispatches to (the memory-efficient
kernel: it saves Q, K, V, the output and a log-sum-exp, not the T x T probabilities the CPU math
path keeps), and the time is a roofline on the named GPU's peaks. What stays CPU-shaped: CPU
autocast's dtype policy (CUDA's keeps layer norms and softmax outputs in fp32: a few % more).

Allowance (stated in every estimate): the CUDA context, 518 MB (NVML process minus reserved on an
H100, ../shared/measurements/h100-2026-11-22), and allocator slack of 2% of the tensors (reserved
over allocated with expandable segments there: 33,868 / 33,355 MB).
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.config import BenchConfig
from benchmark.measure.devices import GPU
from benchmark.measure.tracer import CATEGORIES, Trace, Tracer

CONTEXT_GB = 518 / 1024
SLACK = 0.02
# the share of a peak a kernel reaches: cuBLAS GEMMs at these sizes, fused attention, memory-bound kernels
EFFICIENCY = {"matmul": 0.70, "attention": 0.35, "memory": 0.80}
# host time to dispatch one operator in eager PyTorch (a step is host-bound when its kernels are
# smaller than this): the cached side-network step ran 19.6 ms eager for ~1,400 operators on an H100
HOST_S_PER_OP = 14e-6
GB = 2**30


@dataclass
class WhatIf:
    """Estimate a design other than today's (to compare with measurements made at an earlier one)."""

    resident_images: bool = False  # the uint8 image table on the device (today: staged from the host)
    frozen_fp32: bool = False  # frozen encoders of decoupled methods in fp32 (today: the compute dtype)
    compute_dtype: torch.dtype = torch.bfloat16  # ... run under autocast to this, as the trainer's was
    all_hidden_states: bool = False  # IISAN read output_hidden_states (today: hooks keep the tapped CLS only)


@dataclass
class PhaseEstimate:
    peak_gb: float  # tensors alive at the phase's peak
    categories: dict[str, float] = field(default_factory=dict)  # GB by category at that peak


@dataclass
class MethodEstimate:
    method: str
    device: str  # a GPU name from measure.devices, or "cpu"
    precision: str
    batch_size: int
    items_traced: int  # distinct items (bucketed) of the traced step: the epoch's largest
    items_typical: int
    steps_per_epoch: int
    phases: dict[str, PhaseEstimate]
    train_gb: float  # the training phase as a device would hold it: tensors + slack + CUDA context (GPU)
    flops_per_step: float
    step_s: float | None  # roofline on the GPU's peaks at the typical step (None on CPU)
    epoch_s: float | None
    max_batch: int | None  # the largest batch size whose training fits the GPU's memory
    allowance: str


def make_fake(model: nn.Module, what_if: WhatIf) -> None:
    """Replace every parameter and buffer (built on the meta device) by a fake tensor of its shape
    and dtype, parameters shared stay shared; item images become a fake uint8 table."""
    made: dict[int, nn.Parameter] = {}
    for mod in model.modules():
        for n, p in list(mod._parameters.items()):
            if p is not None:
                if id(p) not in made:
                    dtype = torch.float32 if what_if.frozen_fp32 and not p.requires_grad else p.dtype
                    made[id(p)] = nn.Parameter(torch.empty(p.shape, dtype=dtype), requires_grad=p.requires_grad)
                mod._parameters[n] = made[id(p)]
        for n, b in list(mod._buffers.items()):
            if b is not None:
                mod._buffers[n] = torch.empty(b.shape, dtype=b.dtype)
        if getattr(mod, "has_images", False):  # ItemInputs: the host-side image table
            mod.images = torch.empty(mod.images.shape, dtype=torch.uint8)
        if what_if.frozen_fp32 and hasattr(mod, "compute_dtype"):  # BackboneTaps: fp32 weights, bf16 autocast
            mod.compute_dtype = what_if.compute_dtype
        if what_if.all_hidden_states and hasattr(mod, "all_hidden_states"):  # BackboneTaps: the old read
            mod.all_hidden_states = True


def _fused_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``F.scaled_dot_product_attention`` as a GPU runs it: the memory-efficient kernel (what it
    saves for backward, what torch's FLOP counter charges for it)."""
    bias = attn_mask
    if bias is not None:
        if bias.dtype == torch.bool:
            bias = torch.zeros(bias.shape, dtype=q.dtype).masked_fill(~bias, float("-inf"))
        bias = bias.to(q.dtype).expand(q.size(0), q.size(1), q.size(2), k.size(2))
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, bias, True, dropout_p, is_causal,
                                                                   scale=scale)[0]


@contextlib.contextmanager
def gpu_attention(on: bool):
    saved = F.scaled_dot_product_attention
    if on:
        F.scaled_dot_product_attention = _fused_attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = saved


def phase_of(trace: Trace) -> PhaseEstimate:
    return PhaseEstimate(trace.peak_bytes / GB, {k: v / GB for k, v in trace.at_peak.items()})


def trace_region(model: nn.Module, run: Callable[[Tracer], None], resident_images: bool, *,
                 grads: Callable[[], list] = list, state: Callable[[], list] = list,
                 held_state: list | None = None) -> Trace:
    """``run(tracer)`` traced with ``model``'s weights and buffers (and, resident, its images) held,
    and ``held_state``: optimizer state that exists before the region (a steady step's)."""
    tracer = Tracer()
    tracer.hold(model.parameters(), "weights")
    tracer.hold(model.buffers(), "buffers")
    tracer.hold(held_state or [], "optimizer")
    if resident_images:
        tracer.hold([m.images for m in model.modules() if getattr(m, "has_images", False)], "buffers")
    with tracer:
        run(tracer)
    return tracer.result(grads(), state())


def roofline_s(trace: Trace, gpu: GPU, scale: float = 1.0) -> float:
    """Seconds of the traced operators on ``gpu``: each the slower of its compute and its memory
    traffic at the kernel's usual share of the peaks (``EFFICIENCY``), ``scale`` applied to the
    work; or the host's dispatch time, whichever is longer (eager steps of small kernels are host-bound)."""
    peaks = {torch.bfloat16: gpu.bf16, torch.float16: gpu.fp16}
    device = 0.0
    for op in trace.ops:
        compute = op.flops / (peaks.get(op.dtype, gpu.fp32) * EFFICIENCY[op.kind]) if op.flops else 0.0
        device += max(compute, op.nbytes / (gpu.bandwidth * EFFICIENCY["memory"]))
    return max(device * scale, len(trace.ops) * HOST_S_PER_OP)


def items_per_step(trainer, batch_size: int | None = None) -> list[int]:
    """Each step's bucketed distinct items over the first epoch (at ``batch_size``, else the run's)."""
    cfg = trainer.cfg
    if batch_size is not None:
        trainer.cfg = dataclasses.replace(cfg, batch_size=batch_size, max_steps_per_epoch=0)
    try:
        return [b.uniq.numel() for b in trainer._epoch_batches(trainer._order(1), trainer.n_steps())]
    finally:
        trainer.cfg = cfg


def loss_gb(model: nn.Module, batch: int, seq_len: int, log_pop: torch.Tensor) -> float:
    """Peak GB of the user encoder and the in-batch loss alone (forward and backward) at ``batch``
    sequences, traced on fake item embeddings: its logits grow with batch x (batch x seq_len),
    which no per-item share captures. Run inside the fake mode."""
    from benchmark.models.recommender import inbatch_loss

    dim = model.user_encoder.pos.embedding_dim

    def run(tracer):
        emb = torch.empty(batch * seq_len, dim, requires_grad=True)
        ids = torch.empty(batch, seq_len, dtype=torch.long)
        user = model.user_encoder(emb.view(batch, seq_len, dim)[:, :-1], torch.ones(batch, seq_len - 1))
        tracer.phase = "backward"
        inbatch_loss(user, emb, ids, log_pop).backward()

    tracer = Tracer()
    with tracer:
        run(tracer)
    return tracer.result().peak_bytes / GB


FIT_BATCHES = (64, 128, 256)
_LOSS_CURVES: dict[tuple, tuple[float, float, float]] = {}


def loss_curve(model: nn.Module, seq_len: int, log_pop: torch.Tensor, fake) -> Callable[[int], float]:
    """``loss_gb`` at any batch size from three traces (``FIT_BATCHES``): every tensor of the loss
    is a polynomial of degree <= 2 in the batch size (the logits: batch x batch x seq_len), so three
    traced points fix it. Traced once per user-encoder shape (each trace is ~0.7 s of fake dispatch)."""
    enc = model.user_encoder
    key = (seq_len, enc.pos.embedding_dim, enc.heads, len(enc.encoder.layers), type(enc.encoder.layers[0].self_attn))
    if key not in _LOSS_CURVES:
        with fake:
            ys = [loss_gb(model, b, seq_len, log_pop) for b in FIT_BATCHES]
        x = torch.tensor(FIT_BATCHES, dtype=torch.float64)
        coef = torch.linalg.solve(torch.stack([torch.ones(3, dtype=torch.float64), x, x * x], 1),
                                  torch.tensor(ys, dtype=torch.float64))
        _LOSS_CURVES[key] = tuple(float(c) for c in coef)
    c0, c1, c2 = _LOSS_CURVES[key]
    return lambda b: c0 + c1 * b + c2 * b * b


def max_batch(trainer, train: PhaseEstimate, items: int, gpu: GPU, fake, limit: int = 1 << 15) -> int:
    """The largest batch whose training peak fits ``gpu``: weights, buffers, gradients and optimizer
    state as traced; the encoders' activations scaled by the largest step's distinct items at that
    batch size (they grow with the items, not the sequences); the loss's own peak as traced
    (``loss_curve``)."""
    c = train.categories
    loss = loss_curve(trainer.model, trainer.train_ids.size(1), trainer.log_pop, fake)
    fixed = c["weights"] + c["buffers"] + c["gradients"] + c["optimizer"]
    per_item = max(c["activations"] + c["temporary"] - loss(trainer.cfg.batch_size), 0.0) / max(items, 1)

    def ok(b: int) -> bool:
        need = fixed + per_item * max(items_per_step(trainer, b)) + loss(b)
        return need * (1 + SLACK) + CONTEXT_GB <= gpu.memory_gib

    if not ok(1):
        return 0
    lo, hi = 1, 2
    while hi <= limit and ok(hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def describe_allowance(gpu: GPU | None) -> str:
    if gpu is None:
        return "tensors only (CPU: no context, no allocator slack)"
    return f"+ {SLACK:.0%} allocator slack + {CONTEXT_GB * 1024:.0f} MB CUDA context"


def headline_gb(phase: PhaseEstimate, gpu: GPU | None) -> float:
    return phase.peak_gb * (1 + SLACK) + CONTEXT_GB if gpu is not None else phase.peak_gb


def fake_mode():
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def most_and_mean(values: list[int]) -> tuple[int, int]:
    return max(values), round(sum(values) / len(values))


def config_for(cfg: BenchConfig) -> BenchConfig:
    """The run's config with random init: shapes are all an estimate needs."""
    return dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, init="random"))


def summary(e: MethodEstimate) -> dict[str, Any]:
    """The JSON object of one method (``--format json``)."""
    d = dataclasses.asdict(e)
    d["phases"] = {k: {"peak_gb": v.peak_gb, **{c: v.categories.get(c, 0.0) for c in CATEGORIES}}
                   for k, v in e.phases.items()}
    return d
