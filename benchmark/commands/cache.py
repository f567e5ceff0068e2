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
    from methods.base import BuildContext
    from methods.registry import get_method, options_for

    check_methods(cfg, ["iisan-cached"])
    device = resolve_device(cfg.run.device)
    prep = prepare(cfg)
    seed_everything(cfg.run.seed)
    backbones = load_backbones(cfg.backbone, cfg.data)
    opts = options_for("iisan-cached", cfg)
    method = get_method("iisan-cached")(opts)
    method.rebuild = rebuild
    # the method's own build (what run does): the cache it makes or verifies is the one run uses
    method.build(BuildContext(cfg=cfg, data=prep.data, backbones=backbones, device=device))
    info, taps = method.cache_info, method.taps
    shapes = ", ".join(f"{'image' if k == 'vision' else k} {v}" for k, v in info.shapes.items())
    what = f"built in {info.build_s:.1f}s ({info.reason})" if info.built else f"valid, reused (checked in {info.load_s:.1f}s)"
    echo(f"cache: {info.path}\n  {what}\n  {shapes} {opts.cache_dtype}, taps {taps}\n"
         f"  fingerprint {info.fingerprint[:16]}  (dataset {prep.data.name}, backbone {backbones.info.get('preset')}, "
         f"init {backbones.info.get('init')}, seed {cfg.run.seed})")
    return info
