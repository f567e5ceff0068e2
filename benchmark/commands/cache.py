"""``iisan-bench cache``: build (or verify) the cache ``run`` would use for ``iisan-cached``.

A command, so it lives with the CLI: it reaches into the method (its taps and cache) from above.
"""

from __future__ import annotations


def cache_command(cfg, rebuild: bool = False, echo=print):
    """``iisan-bench cache``: build (or verify) the cache ``run`` would use for ``iisan-cached``.

    Prepares the data and builds the backbones exactly as the runner does for repeat 0 (seeded
    with ``run.seed`` right before the backbones are built, so random-init weights match).
    """
    from benchmark.launch.prepare import prepare, resolve_device, seed_everything
    from benchmark.launch.recipe import check_methods
    from benchmark.models.backbones import load_backbones
    from methods._common import encoders, freeze, frozen_in_compute_dtype
    from methods.base import BuildContext, ItemInputs
    from methods.iisan import BackboneTaps, resolve_taps
    from methods.iisan.cache import ensure_cache
    from methods.registry import options_for

    check_methods(cfg, ["iisan-cached"])
    device = resolve_device(cfg.run.device)
    prep = prepare(cfg)
    seed_everything(cfg.run.seed)
    backbones = load_backbones(cfg.backbone, cfg.data)
    opts = options_for("iisan-cached", cfg)
    models = encoders(backbones, prep.data)
    freeze(*models.values())
    taps = resolve_taps(opts, models)
    frozen_in_compute_dtype(models, cfg.train.precision)  # as run builds it: the same cache
    ctx = BuildContext(cfg=cfg, data=prep.data, backbones=backbones, device=device)
    _, info = ensure_cache(ctx, BackboneTaps(models, ItemInputs(prep.data), taps), taps, opts, rebuild=rebuild)
    shapes = ", ".join(f"{'image' if k == 'vision' else k} {v}" for k, v in info.shapes.items())
    what = f"built in {info.build_s:.1f}s ({info.reason})" if info.built else f"valid, reused (checked in {info.load_s:.1f}s)"
    echo(f"cache: {info.path}\n  {what}\n  {shapes} {opts.cache_dtype}, taps {taps}\n"
         f"  fingerprint {info.fingerprint[:16]}  (dataset {prep.data.name}, backbone {backbones.info.get('preset')}, "
         f"init {backbones.info.get('init')}, seed {cfg.run.seed})")
    return info
