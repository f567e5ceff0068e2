"""The estimate of one method as a run would train it: its real model built by the factory on the
meta device, re-made as fake tensors, and the real trainer's step, evaluation and (iisan-cached)
cache build traced (``launch.estimate`` has the machinery and says why it is built this way).
Used by ``iisan-bench estimate`` and, beside the measurement, by every run on a known GPU."""

from __future__ import annotations

import dataclasses

import torch

from benchmark.config import BenchConfig
from benchmark.launch import estimate as E
from benchmark.measure.devices import GPU
from core.record import Flops


def _data_for(cfg: BenchConfig):
    """The run's data without decoding or drawing one image (a 3 GB table at paper scale): the
    split and tokens as the run has them; the image table's shape only (``estimate.make_fake`` fakes it)."""
    from benchmark.launch.prepare import prepare

    images = cfg.data.images != "none"
    prep = prepare(dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, images="none")), floor=False)
    if images:
        s = cfg.data.image_size
        prep.data.images = torch.empty(prep.data.n_items + 1, 3, s, s, dtype=torch.uint8, device="meta")
        prep.data.image_mode = cfg.data.images
    return prep


def _build_meta(cfg: BenchConfig, name: str, prep):
    """The method's model from the one factory, on the meta device (outside any fake mode: a build
    casts and moves modules, which fake tensors of the meta device refuse)."""
    from benchmark.launch.factory import build_model

    with torch.device("meta"):
        return build_model(cfg, name, prep.data, torch.device("meta")).model


def _trainer(cfg: BenchConfig, name: str, model, prep):
    from benchmark.launch.recipe import method_config
    from benchmark.training.trainer import Trainer

    mcfg = method_config(cfg, name)
    t = dataclasses.replace(mcfg.train, compile="off")
    return Trainer(model, prep.split, t, mcfg.eval, torch.device("cpu"), cfg.run.seed,
                   progress=False)


def _epoch_steps(trainer) -> tuple[list[int], object]:
    """The first epoch's bucketed distinct items per step, and its largest step (the training peak).
    Outside any fake mode: the batches are cut from the real ids (``torch.unique`` on the host)."""
    batches = trainer._epoch_batches(trainer._order(1), trainer.n_steps())
    counts = [b.uniq.numel() for b in batches]
    return counts, batches[counts.index(max(counts))]


def _steady_optimizer(trainer) -> list[torch.Tensor]:
    """The optimizer's state as every step after the first holds it through its whole forward and
    backward (Adam's two moments of each trainable weight): one untraced step on zero gradients makes
    it, on fake tensors. Why: traced from a fresh optimizer, the peak would miss it (2 x 4 bytes a
    trainable parameter: 10 GB for a 1.3B-parameter FFT)."""
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.zeros_like(p)
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    return [t for s in trainer.optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


def _train_trace(trainer, batch, what_if: E.WhatIf):
    model = trainer.model
    held = _steady_optimizer(trainer)

    def run(tracer):
        model.train()
        loss = trainer._loss(batch)
        tracer.phase = "backward"
        loss.backward()
        tracer.phase = "optimizer"
        trainer.optimizer.step()

    grads = lambda: [p.grad for p in model.parameters() if p.grad is not None]  # noqa: E731
    state = lambda: [t for s in trainer.optimizer.state.values() for t in s.values()  # noqa: E731
                     if isinstance(t, torch.Tensor)]
    return E.trace_region(model, run, what_if.resident_images, grads=grads, state=state, held_state=held)


def _eval_trace(trainer, what_if: E.WhatIf):
    model = trainer.model

    def run(tracer):
        tracer.phase = "eval"
        model.eval()
        with torch.no_grad():
            chunk = trainer._item_table(slice(0, 1))
            table = torch.empty(trainer.n_items + 1, chunk.size(1))
            inputs, target, history = (t[:trainer.eval_cfg.eval_batch_size] for t in trainer.eval_sets[0])
            trainer.rank(table, inputs, target, history)

    return E.trace_region(model, run, what_if.resident_images)


def _cache_build_trace(cfg: BenchConfig, prep, source, what_if: E.WhatIf):
    """iisan-cached's one-off build: the frozen encoders (live iisan's ``source``, fake) over one build batch."""
    from methods.iisan.cache import auto_build_batch
    from methods.registry import options_for

    models = {"text": source.text, **({"vision": source.vision} if source.vision is not None else {})}
    batch = options_for("iisan-cached", cfg).build_batch_size or auto_build_batch(models, prep.data)

    def run(tracer):
        tracer.phase = "eval"
        with torch.no_grad():
            source(torch.arange(1, min(batch, prep.data.n_items) + 1))

    return E.trace_region(source, run, what_if.resident_images)


def estimate_method(cfg: BenchConfig, name: str, prep, gpu: GPU | None, what_if: E.WhatIf) -> E.MethodEstimate:
    fake = E.fake_mode()
    model = _build_meta(cfg, name, prep)
    source = _build_meta(cfg, "iisan", prep).item_tower.source if name == "iisan-cached" else None
    with fake:
        for m in (model, source):
            if m is not None:
                E.make_fake(m, what_if)
        trainer = _trainer(cfg, name, model, prep)
    counts, peak_batch = _epoch_steps(trainer)
    with fake, E.gpu_attention(gpu is not None):
        train = _train_trace(trainer, peak_batch, what_if)
        phases = {"setup": E.PhaseEstimate(*_resting(model, what_if)),
                  "train": E.phase_of(train), "eval": E.phase_of(_eval_trace(trainer, what_if))}
        if name == "iisan-cached":
            phases["cache_build"] = E.phase_of(_cache_build_trace(cfg, prep, source, what_if))
    most, typical = E.most_and_mean(counts)
    step = E.roofline_s(train, gpu, typical / most) if gpu is not None else None
    return E.MethodEstimate(
        name, gpu.name if gpu else "cpu", trainer.cfg.precision, trainer.cfg.batch_size, most, typical,
        len(counts), phases, E.headline_gb(phases["train"], gpu), train.flops, step,
        step * trainer.n_steps() if step is not None else None,
        E.max_batch(trainer, phases["train"], most, gpu, fake) if gpu is not None else None, E.describe_allowance(gpu))


def _resting(model, what_if: E.WhatIf) -> tuple[float, dict[str, float]]:
    """The setup phase: what the built model keeps on the device before training (the runner's
    ``resident_mb``), plus the image table where the design kept it there."""
    from benchmark.launch.factory import resident_mb

    held = resident_mb(model)
    images = sum(m.images.numel() for m in model.modules() if getattr(m, "has_images", False)) / E.GB
    cats = {"weights": held["params_mb"] / 1024,
            "buffers": held["buffers_mb"] / 1024 + (images if what_if.resident_images else 0.0)}
    return sum(cats.values()), cats


def measure_cpu_step(cfg: BenchConfig, name: str) -> tuple[E.PhaseEstimate, float]:
    """What the estimate of ``--device cpu`` is checked against: the method's real model (real
    weights, real data, real kernels) built by the factory, its real training step on the epoch's
    largest step, with the tensors alive at the peak counted as they are allocated and freed; and
    that step's FLOPs as torch's ``FlopCounterMode`` counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmark.launch.factory import build_model
    from benchmark.launch.prepare import prepare, seed_everything

    cfg = E.config_for(cfg)
    prep = prepare(cfg, floor=False)
    seed_everything(cfg.run.seed)
    model = build_model(cfg, name, prep.data, torch.device("cpu")).model
    trainer = _trainer(cfg, name, model, prep)
    _, peak_batch = _epoch_steps(trainer)
    with FlopCounterMode(display=False) as counter:
        trace = _train_trace(trainer, peak_batch, E.WhatIf())
    return E.phase_of(trace), float(counter.get_total_flops())


def estimate_all(cfg: BenchConfig, names: list[str], gpu: GPU | None,
                 what_if: E.WhatIf | None = None) -> list[E.MethodEstimate]:
    cfg = E.config_for(cfg)
    prep = _data_for(cfg)
    return [estimate_method(cfg, n, prep, gpu, what_if or E.WhatIf()) for n in names]


def estimate_for_record(cfg: BenchConfig, name: str, prep, device_name: str,
                        step_p50_s: float | None) -> tuple[dict, Flops]:
    """A run's ``estimate`` (for the GPU it ran on, or tensors only where the table has no such
    card) and its ``flops``: the traced FLOPs of a typical step, the device's peak for the run's
    precision and the MFU of the measured median step."""
    from benchmark.measure.devices import gpu_of

    gpu = gpu_of(device_name)
    est = estimate_method(E.config_for(cfg), name, prep, gpu, E.WhatIf())
    per_step = est.flops_per_step * est.items_typical / max(est.items_traced, 1)
    peak = gpu.peak(est.precision) if gpu is not None else None
    mfu = per_step / step_p50_s / peak if peak and step_p50_s else None
    flops = Flops(per_step=per_step, source="traced", device_peak=peak, precision=est.precision, mfu=mfu)
    return E.summary(est), flops
