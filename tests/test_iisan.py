"""IISAN: the side network's recurrences, live vs cached states, the cache's fingerprint and
integrity checks, random-init determinism, and cache time kept out of setup time."""

from __future__ import annotations

import json
import mmap
import time
import types
from pathlib import Path

import pytest
import torch

from benchmark.config import load_config
from benchmark.launch.prepare import prepare, seed_everything
from benchmark.launch.runner import run_method
from benchmark.models.backbones import load_backbones
from core.errors import BenchError
from methods.base import BuildContext, ItemInputs
from methods.iisan import (
    GATE_TEMPERATURE,
    BackboneTaps,
    IISANCachedOptions,
    IISANOptions,
    SideNetwork,
    default_taps,
    resolve_taps,
)
from methods.iisan import cache as iisan_cache
from methods.registry import get_method, options_for

torch.set_num_threads(1)
CPU = torch.device("cpu")


def small(tmp_path, **iisan_cached):
    return load_config(None, {"run": {"isolate": False, "epochs": 1},
                              "data": {"synthetic": {"users": 64, "items": 40}},
                              "train": {"max_steps_per_epoch": 2},
                              "methods": {"iisan-cached": {"cache_dir": str(tmp_path), **iisan_cached}}})


@pytest.fixture(scope="module")
def prep():
    return prepare(load_config(None, {"data": {"synthetic": {"users": 64, "items": 40}}}))


def build(cfg, prep, name, seed=0):
    seed_everything(seed)
    backbones = load_backbones(cfg.backbone, cfg.data)
    method = get_method(name)(options_for(name, cfg))
    tower = method.build(BuildContext(cfg=cfg, data=prep.data, backbones=backbones, device=CPU))
    return tower, method


# --------------------------------------------------------------------------- the side network


def test_side_network_follows_the_papers_recurrences():
    torch.manual_seed(0)
    side = SideNetwork(8, 8, 3, 3, IISANOptions(bottleneck=4), item_dim=5)
    with torch.no_grad():
        for b in side.branches.values():
            b.gates.normal_()
    t, v = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    san = lambda blk, x: x + blk.up(torch.relu(blk.down(x)))  # noqa: E731
    gate = lambda b, i: torch.sigmoid(b.gates[i] / GATE_TEMPERATURE)  # noqa: E731

    def intra(b, x):
        h = san(b.blocks[0], x[:, 0])
        for i in (1, 2):
            g = gate(b, i - 1)
            h = san(b.blocks[i], g * x[:, i] + (1 - g) * h)
        return b.out(h)

    def inter(b, xt, xi):
        m = torch.zeros_like(xt[:, 0])
        for i in range(3):
            g = gate(b, i)
            m = san(b.blocks[i], m + g * xi[:, i] + (1 - g) * xt[:, i])
        return b.out(m)

    br, p = side.branches, side.proj
    want = side.fuse(torch.cat([p["text"](intra(br["text"], t)), p["image"](intra(br["image"], v)),
                                p["inter"](inter(br["inter"], t, v))], dim=-1))
    assert torch.allclose(side(t, v), want, atol=1e-6)


def test_gates_start_at_one_half_and_options_shape_the_network():
    side = SideNetwork(8, 8, 3, 3, IISANOptions(), item_dim=4)
    assert list(side.branches) == ["text", "image", "inter"]
    assert all(torch.all(torch.sigmoid(b.gates / GATE_TEMPERATURE) == 0.5) for b in side.branches.values())
    assert side.branches["text"].gates.numel() == 2 and side.branches["inter"].gates.numel() == 3
    assert list(SideNetwork(8, 8, 3, 3, IISANOptions(modality="intra"), 4).branches) == ["text", "image"]
    assert list(SideNetwork(8, 8, 3, 3, IISANOptions(modality="inter"), 4).branches) == ["inter"]
    assert SideNetwork(8, 8, 3, 3, IISANOptions(modality="inter"), 4).fuse is None
    add = SideNetwork(8, 8, 3, 3, IISANOptions(fusion="add"), 4)
    assert all(b.gates is None for b in add.branches.values())
    text_only = SideNetwork(8, None, 3, None, IISANOptions(), 4)
    assert list(text_only.branches) == ["text"] and text_only.fuse is None
    wide_image = SideNetwork(8, 16, 3, 3, IISANOptions(), 4)  # IISAN-Versa: the wider side projected per step
    assert wide_image.align_kind == "image" and [(l.in_features, l.out_features) for l in wide_image.align] == [(16, 8)] * 3
    assert wide_image.branches["inter"].blocks[0].down.in_features == 8 and wide_image.proj["inter"].in_features == 8
    assert wide_image(torch.randn(5, 3, 8), torch.randn(5, 3, 16)).shape == (5, 4)
    with pytest.raises(BenchError, match="the same number of taps from both encoders"):
        SideNetwork(8, 16, 3, 4, IISANOptions(), 4)
    with pytest.raises(BenchError, match="'inter' needs images"):
        SideNetwork(8, None, 3, None, IISANOptions(modality="inter"), 4)


def test_paper_architecture_gates_the_first_intra_step_and_starts_near_identity():
    torch.manual_seed(0)
    side = SideNetwork(8, 8, 3, 3, IISANOptions(bottleneck=4), item_dim=5, architecture="paper")
    # one gate per tap in every branch (the first intra step mixes x_0 with a zero state)
    assert [b.gates.numel() for b in side.branches.values()] == [3, 3, 3]
    ours = SideNetwork(8, 8, 3, 3, IISANOptions(bottleneck=4), item_dim=5)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(side) - n(ours) == 2  # the two intra branches' first gates
    blocks = [blk for b in side.branches.values() for blk in b.blocks]
    assert all(torch.all(lin.bias == 0) for blk in blocks for lin in (blk.down, blk.up))
    w = torch.cat([lin.weight.flatten() for blk in blocks for lin in (blk.down, blk.up)])
    assert abs(w.std().item() - 0.01) < 0.001  # N(0, 0.01): 576 draws
    with torch.no_grad():
        for b in side.branches.values():
            b.gates.normal_()
    b, x = side.branches["text"], torch.randn(2, 3, 8)
    san = lambda blk, x: x + blk.up(torch.relu(blk.down(x)))  # noqa: E731
    gate = lambda i: torch.sigmoid(b.gates[i] / GATE_TEMPERATURE)  # noqa: E731
    h = san(b.blocks[0], gate(0) * x[:, 0])
    for i in (1, 2):
        h = san(b.blocks[i], gate(i) * x[:, i] + (1 - gate(i)) * h)
    assert torch.allclose(b(x), b.out(h), atol=1e-6)


def test_taps_default_to_every_other_layer_ending_at_the_last():
    assert default_taps(12) == [0, 2, 4, 6, 8, 10, 12]
    assert default_taps(4) == [0, 2, 4]
    assert default_taps(5) == [1, 3, 5]

    class Enc(torch.nn.Module):
        config = type("C", (), {"num_hidden_layers": 4})()

    assert resolve_taps(IISANOptions(taps=[4, 1]), {"text": Enc()}) == {"text": [1, 4]}
    with pytest.raises(BenchError, match=r"\[5\] out of range for the text encoder"):
        resolve_taps(IISANOptions(taps=[0, 5]), {"text": Enc()})
    cfg = load_config(None, {"methods": {"iisan": {"taps": [0, 0]}}})
    with pytest.raises(BenchError, match="duplicates"):
        options_for("iisan", cfg)


def test_frozen_encoders_stay_in_eval_mode_while_training(tmp_path, prep):
    tower, _ = build(small(tmp_path), prep, "iisan")
    tower.train()
    assert tower.side.training and not tower.source.text.training and not tower.source.vision.training
    assert not any(p.requires_grad for p in tower.source.parameters())


# --------------------------------------------------------------------------- live == cached


@pytest.mark.parametrize("dtype, tol", [("fp32", 1e-5), ("fp16", 1e-3)])
def test_iisan_and_cached_give_the_same_item_embeddings(tmp_path, prep, dtype, tol):
    cfg = small(tmp_path, cache_dtype=dtype)
    live, _ = build(cfg, prep, "iisan")
    cached, method = build(cfg, prep, "iisan-cached")
    assert method.cache_info.built
    for a, b in zip(live.side.state_dict().values(), cached.side.state_dict().values()):
        assert torch.equal(a, b)  # built from the same random state: identical initial side networks
    cached.side.load_state_dict(live.side.state_dict())
    live.eval(), cached.eval()
    ids = torch.arange(prep.data.n_items + 1)
    with torch.no_grad():
        diff = (live(ids) - cached(ids)).abs().max().item()
    assert diff <= tol, diff


# --------------------------------------------------------------------------- the cache itself


def ensure(cfg, prep, capsys=None):
    seed_everything(0)
    backbones = load_backbones(cfg.backbone, cfg.data)
    opts = options_for("iisan-cached", cfg)
    models = {"text": backbones.text, "vision": backbones.vision}
    taps = resolve_taps(opts, models)
    ctx = BuildContext(cfg=cfg, data=prep.data, backbones=backbones, device=CPU)
    tensors, info = iisan_cache.ensure_cache(ctx, BackboneTaps(models, ItemInputs(prep.data), taps), taps, opts)
    return tensors, info


def test_cache_is_reused_and_rebuilt_when_stale_or_damaged(tmp_path, prep, capsys):
    cfg = small(tmp_path)
    first, info = ensure(cfg, prep)
    assert info.built and info.reason == "no cache yet" and "building" in capsys.readouterr().err
    again, info2 = ensure(cfg, prep)
    assert not info2.built and info2.build_s == 0.0 and info2.path == info.path
    assert all(torch.equal(first[k][0], again[k][0]) for k in first)

    meta_path = info.path / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["fingerprint"] = "0" * 64
    meta["components"]["tokens"] = "stale"
    meta_path.write_text(json.dumps(meta))
    _, info3 = ensure(cfg, prep)
    assert info3.built and info3.reason == "fingerprint changed (tokens)"
    assert "fingerprint changed (tokens); building" in capsys.readouterr().err

    text = info.path / "text.pt"
    text.write_bytes(text.read_bytes()[:-100])  # truncated
    _, info4 = ensure(cfg, prep)
    assert info4.built and "text.pt is corrupt or truncated" in info4.reason
    _, info5 = ensure(cfg, prep)
    assert not info5.built  # the rebuilt cache is valid again

    meta_path.write_text("{not json")
    _, info6 = ensure(cfg, prep)
    assert info6.built and info6.reason.startswith("unreadable meta.json")


def test_changed_data_changes_the_fingerprint(tmp_path, prep):
    cfg = small(tmp_path)
    _, info = ensure(cfg, prep)
    old = prep.data.tokens.clone()
    try:
        prep.data.tokens[1, 1] += 1  # a re-tokenised title
        _, info2 = ensure(cfg, prep)
    finally:
        prep.data.tokens.copy_(old)
    assert info2.built and info2.reason == "fingerprint changed (tokens)" and info2.path == info.path


def test_random_init_backbones_are_the_same_for_the_same_seed():
    """The runner seeds right before building the backbones, so iisan and iisan-cached (and the
    ``cache`` command) see identical random weights; the fingerprint hashes the weights anyway."""
    cfg = load_config(None)

    def weights(seed):
        seed_everything(seed)
        b = load_backbones(cfg.backbone, cfg.data)
        return iisan_cache.hash_model(b.text), iisan_cache.hash_model(b.vision)

    assert weights(42) == weights(42)
    assert weights(43) != weights(42)


def test_cache_build_is_a_one_off_cost_with_its_own_time_and_memory_phase(tmp_path, prep, monkeypatch):
    real, clock = iisan_cache.compute_states, [0.0]
    held = []
    perf_counter, wall = time.perf_counter, time.time

    def slow(*args, **kwargs):
        block = mmap.mmap(-1, 48 * 2**20)  # 48 MB of fresh pages (malloc could reuse resident ones)
        block.write(b"x" * len(block))
        held.append(block)
        clock[0] += 1000.0  # the build "takes" 1000 s on both clocks: no sleep, no race with the machine's load
        out = real(*args, **kwargs)
        held.pop().close()
        return out

    monkeypatch.setattr(time, "perf_counter", lambda: perf_counter() + clock[0])
    monkeypatch.setattr(time, "time", lambda: wall() + clock[0])
    monkeypatch.setattr(iisan_cache, "compute_states", slow)
    cfg = small(tmp_path, build_batch_size=16)
    rec = run_method(cfg, "iisan-cached", prep, CPU, progress=False, sample_memory=False)
    assert rec.status == "ok", rec.traceback
    assert rec.cache.status == "built" and rec.cache.batch_size == 16
    assert rec.time.cache_build_s == rec.cache.build_s >= 1000.0
    assert rec.time.setup_s < 1000.0  # the build is not setup (with it, setup would be past 1000 s)
    assert rec.params.total == rec.params.trainable  # the encoders are not part of the model
    phases = rec.memory.phases
    assert list(phases) == ["setup", "cache_build", "train", "eval"]
    assert phases["cache_build"].seconds >= 1000.0
    if phases["cache_build"].rss_peak_mb is not None and phases["train"].rss_peak_mb is not None:
        assert phases["cache_build"].rss_peak_mb > phases["train"].rss_peak_mb + 24  # the build's 48 MB are not training's
    again = run_method(cfg, "iisan-cached", prep, CPU, progress=False, sample_memory=False)
    assert again.cache.status == "loaded" and again.cache.build_s == 0.0 and again.cache.batch_size is None
    assert "cache_build" not in again.memory.phases


def test_a_loaded_cache_reports_the_cost_of_its_own_build(tmp_path):
    """A second sweep (a fresh clone sharing the user cache folder) loads the cache: its report still
    shows what building it cost, from build_cost.json beside the cache (core.oneoff)."""
    from benchmark.launch.sweep import run_benchmark
    from core.oneoff import BUILD_COST_FILE
    from reports import build_report

    def sweep(out):
        cfg = small(tmp_path / "cache")
        cfg.run.methods, cfg.run.out = ["iisan-cached"], str(tmp_path / out)
        lines = run_benchmark(cfg, progress=False, echo=lambda *_: None).read_text().splitlines()
        return json.loads(lines[0])

    first, second = sweep("a"), sweep("b")
    assert first["cache"]["status"] == "built" and second["cache"]["status"] == "loaded"
    note = json.loads((Path(first["cache"]["path"]) / BUILD_COST_FILE).read_text())
    assert note["build_s"] == first["cache"]["build_s"] == second["cache"]["built_s"] > 0
    assert note["peak_mb"] == first["memory"]["phases"]["cache_build"]["peak_mb"] == second["cache"]["built_peak_mb"]
    md = build_report(tmp_path / "b").read_text()
    peak = first["memory"]["phases"]["cache_build"]["peak_mb"]
    assert f"loaded; built earlier on {first['env']['device_name']}, {first['timestamp'][:10]}: " in md
    assert f"{peak:.0f} MB peak" in md or f"{peak / 1024:.2f} GB peak" in md


def test_auto_build_batch_keeps_the_base_backbones_within_4_gb():
    from benchmark.models.backbones import load_backbones

    cfg = load_config(None, {"backbone": {"preset": "base", "init": "random"}, "data": {"image_size": 224}})
    with torch.device("meta"):
        b = load_backbones(cfg.backbone, cfg.data)
    data = types.SimpleNamespace(tokens=torch.zeros(1, 30, dtype=torch.long))
    models = {"text": b.text, "vision": b.vision}
    # fp32: 748 MB of weights + 128 x 6.4 MB (one ViT block's working set an image) = 1.6 GB <= 2 GB,
    # half the 4 GB budget (the rest is slack for the CUDA context and allocator rounding); 256 would not fit
    assert iisan_cache.auto_build_batch(models, data) == 128
    for m in models.values():
        m.to(torch.bfloat16)
    assert iisan_cache.auto_build_batch(models, data) == 512  # bf16: 374 MB + 512 x 3.2 MB = 2.0 GB


def test_cached_options_are_strict():
    cfg = load_config(None, {"methods": {"iisan-cached": {"cache_dtype": "bf16"}}})
    with pytest.raises(BenchError, match="'methods.iisan-cached.cache_dtype' must be one of 'fp16', 'fp32'"):
        options_for("iisan-cached", cfg)
    cfg = load_config(None, {"methods": {"iisan": {"cache_dir": "/tmp"}}})
    with pytest.raises(BenchError, match="unknown key 'methods.iisan.cache_dir'"):
        options_for("iisan", cfg)
    assert isinstance(options_for("iisan-cached", load_config(None)), IISANCachedOptions)
