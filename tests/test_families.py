"""Encoder families: every method on every family's tiny config, pooling and taps as transformers
defines hidden states, grouped taps and alignment for asymmetric pairs, refusals in one line, and the
large presets' meta-device counts against analytic counts and the model cards."""

from __future__ import annotations

import pytest
import torch

from benchmark.config import load_config
from benchmark.launch.recipe import check_methods
from benchmark.models.backbones import load_backbones, meta_encoders
from benchmark.models.families import FAMILIES, family_of, pool
from benchmark.training.trainer import Trainer, TrainOutcome
from core.errors import BenchError
from core.presets import ARCHS, TINY_TEXT, TINY_VISION
from methods.iisan import IISANOptions, TapCLS, grouped_taps, resolve_taps
from tests.helpers import CPU, build

torch.set_num_threads(1)

METHODS = ["fft", "lora", "adapter", "bitfit", "iisan", "iisan-cached"]
# every text family with every vision family at least once; tiny-qwen2 (96 wide, 6 layers) + tiny-siglip
# (64 wide, 4 layers) is asymmetric in both width and depth
PAIRS = [("tiny-roberta", "tiny-clip"), ("tiny-modernbert", "tiny-siglip"), ("tiny-llama", "tiny-dinov2"),
         ("tiny-mistral", "tiny-vit"), ("tiny-gemma", "tiny-clip"), ("tiny-qwen2", "tiny-siglip"),
         ("tiny-qwen3", "tiny-dinov2")]
BIAS_FREE = {"tiny-modernbert", "tiny-llama", "tiny-mistral", "tiny-gemma", "tiny-qwen3"}


def pair_cfg(tmp_path, text: str, vision: str, **over):
    return load_config(None, {"run": {"isolate": False, "epochs": 1},
                              "data": {"synthetic": {"users": 64, "items": 40}},
                              "train": {"max_steps_per_epoch": 2, "batch_size": 32},
                              "backbone": {"text_model": text, "vision_model": vision, **over},
                              "methods": {"iisan-cached": {"cache_dir": str(tmp_path)}}})


def test_every_family_is_covered_by_the_pairs():
    assert {t for t, _ in PAIRS} | {"tiny-bert"} == set(TINY_TEXT)
    assert {v for _, v in PAIRS} == set(TINY_VISION)
    assert {ARCHS[n]["model_type"] for n in (*TINY_TEXT, *TINY_VISION)} <= set(FAMILIES)


@pytest.mark.parametrize("text, vision", PAIRS)
def test_every_method_trains_two_steps_on_every_family(text, vision, tmp_path):
    """Builds, trains two steps, keeps every frozen weight bit-identical and moves its own; BitFit on a
    bias-free encoder is refused in one line naming it, before anything is built."""
    cfg = pair_cfg(tmp_path, text, vision)
    for name in METHODS:
        if name == "bitfit" and text in BIAS_FREE:
            fam = FAMILIES[ARCHS[text]["model_type"]].name
            with pytest.raises(BenchError, match=rf"'bitfit' cannot run on these backbones: bitfit does not apply: "
                                                 rf"the text encoder \({fam}, \w+Model\) has no bias terms; .*"
                                                 r"these can: --methods fft,lora,adapter,iisan,iisan-cached$"):
                check_methods(cfg, METHODS)
            continue
        model, encoders, prep = build(cfg, name)
        frozen = {f"{k}.{n}": p.detach().clone() for k, enc in zip(("text", "vision"), encoders)
                  for n, p in enc.named_parameters() if not p.requires_grad}
        assert bool(frozen) == (name != "fft"), name
        before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        out = TrainOutcome()
        Trainer(model, prep.split, cfg.train, cfg.eval, CPU, 0, progress=False).train_epoch(1, out)
        assert out.steps == [2] and all(torch.isfinite(torch.tensor(out.losses))), (name, out.losses)
        for key, p in ((f"{k}.{n}", p) for k, enc in zip(("text", "vision"), encoders)
                       for n, p in enc.named_parameters()):
            if key in frozen:
                assert torch.equal(p, frozen[key]), (name, key)
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad), name
    if text not in BIAS_FREE:
        check_methods(cfg, METHODS)  # nothing refused


@pytest.mark.parametrize("name", [*TINY_TEXT, *TINY_VISION])
def test_taps_are_transformers_hidden_states_pooled(name):
    """Every tap i is ``hidden_states[i]`` exactly as transformers reports it (the LLMs' and
    ModernBERT's last one after their final norm), pooled the family's way."""
    from transformers import AutoConfig, AutoModel

    arch = dict(ARCHS[name])
    config = AutoConfig.for_model(arch.pop("model_type"), **arch, **({"image_size": 32} if "patch_size" in arch else {}))
    torch.manual_seed(0)
    model = AutoModel.from_config(config).eval()
    L = config.num_hidden_layers
    how = family_of(config).pooling
    tap = TapCLS(model, list(range(L + 1)), how)
    if family_of(config).kind == "vision":
        inputs, mask = {"pixel_values": torch.randn(3, 3, 32, 32)}, None
    else:
        mask = torch.tensor([[1] * 8, [1] * 5 + [0] * 3, [1] * 2 + [0] * 6])
        inputs = {"input_ids": torch.randint(200, 1000, (3, 8)), "attention_mask": mask}
        tap.set_mask(mask)
    with torch.no_grad():
        hs = model(**inputs, output_hidden_states=True).hidden_states
    got = tap.collect()
    assert got.shape == (3, L + 1, config.hidden_size)
    for i in range(L + 1):
        assert torch.equal(got[:, i], pool(hs[i], mask, how)), (name, i)


def test_pooling_by_hand():
    h = torch.arange(2 * 4 * 2, dtype=torch.float).reshape(2, 4, 2)  # h[b, t] = [8b + 2t, 8b + 2t + 1]
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1]])
    assert pool(h, right, "cls").tolist() == [[0, 1], [8, 9]]
    assert pool(h, right, "last").tolist() == [[2, 3], [14, 15]]  # positions 1 and 3
    assert pool(h, left, "last").tolist() == [[6, 7], [14, 15]]  # left padding: still the last real token
    assert pool(h, right, "mean").tolist() == [[1, 2], [11, 12]]  # mean of positions 0-1, and 0-3
    assert pool(h, None, "mean").tolist() == [[3, 4], [11, 12]]


def test_grouped_taps_give_both_encoders_the_same_steps():
    assert grouped_taps(24, 7) == [0, 4, 8, 12, 16, 20, 24] and grouped_taps(12, 7) == [0, 2, 4, 6, 8, 10, 12]
    assert grouped_taps(16, 7) == [0, 3, 5, 8, 11, 13, 16] and grouped_taps(5, 1) == [5]
    models = meta_encoders(load_config(None, {"backbone": {"preset": "tiny-asym"}}).backbone,
                           load_config(None, {}).data)
    assert resolve_taps(IISANOptions(), models) == {"text": [0, 3, 6], "vision": [0, 2, 4]}  # 6 and 4 layers
    assert resolve_taps(IISANOptions(steps=5), models) == {"text": [0, 2, 3, 5, 6], "vision": [0, 1, 2, 3, 4]}
    with pytest.raises(BenchError, match=r"'methods.iisan.steps' = 6: the vision encoder has 4 layers, so at most 5"):
        resolve_taps(IISANOptions(steps=6), models)
    base = meta_encoders(load_config(None, {"backbone": {"preset": "base"}}).backbone, load_config(None, {}).data)
    assert resolve_taps(IISANOptions(), base)["text"] == [0, 2, 4, 6, 8, 10, 12]  # the paper's LayerDrop


def test_asymmetric_side_network_aligns_widths_and_cached_equals_live(tmp_path):
    cfg = load_config(None, {"run": {"isolate": False}, "data": {"synthetic": {"users": 64, "items": 40}},
                             "backbone": {"preset": "tiny-asym"},
                             "methods": {"iisan-cached": {"cache_dir": str(tmp_path), "cache_dtype": "fp32"}}})
    live, _, prep = build(cfg, "iisan")
    cached, _, _ = build(cfg, "iisan-cached")
    side = live.item_tower.side
    assert side.align_kind == "text" and [(a.in_features, a.out_features) for a in side.align] == [(96, 64)] * 3
    assert side.branches["text"].out.in_features == 96 and side.branches["inter"].out.in_features == 64
    cached.item_tower.side.load_state_dict(side.state_dict())
    ids = torch.arange(prep.data.n_items + 1)
    live.eval(), cached.eval()
    with torch.no_grad():
        assert (live.item_tower(ids) - cached.item_tower(ids)).abs().max().item() <= 1e-5


def test_records_and_reports_name_both_encoders(tmp_path):
    from benchmark.launch.runner import run_method

    cfg = load_config(None, {"run": {"isolate": False, "epochs": 1}, "data": {"synthetic": {"users": 64, "items": 40}},
                             "train": {"max_steps_per_epoch": 2}, "backbone": {"preset": "tiny-asym"},
                             "methods": {"iisan-cached": {"cache_dir": str(tmp_path)}}})
    from tests.helpers import prep_for

    rec = run_method(cfg, "iisan-cached", prep_for(cfg), CPU, progress=False, sample_memory=False)
    assert rec.status == "ok", rec.error
    b = rec.backbone
    assert (b.text_encoder.family, b.text_encoder.hidden_size, b.text_encoder.layers, b.text_encoder.pooling,
            b.text_encoder.decoder) == ("Qwen2", 96, 6, "last", True)
    assert (b.vision_encoder.family, b.vision_encoder.hidden_size, b.vision_encoder.pooling) == ("SigLIP", 64, "mean")
    # 41 rows x 3 taps x (96 + 64) fp16 values, plus the fp32 offsets (3 x (96 + 64))
    assert rec.cache.size_mb == pytest.approx((41 * 3 * 160 * 2 + 3 * 160 * 4) / 2**20)
    from reports.header import _backbone
    from reports.load import Run

    line = _backbone(Run(1, rec))
    assert "Qwen2 96 wide, 6 layers, last-token pooling" in line and "SigLIP 64 wide, 4 layers, mean pooling" in line


def test_a_cache_that_does_not_fit_is_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    import shutil

    from methods.iisan import cache as iisan_cache

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1024))
    cfg = pair_cfg(tmp_path / "c", "tiny-qwen2", "tiny-siglip")
    with pytest.raises(BenchError, match=r"^iisan-cached: the cache needs 0 MB but .* has 0 MB free -- set "
                                         r"'methods.iisan-cached.cache_dir'"):
        build(cfg, "iisan-cached")
    assert not (tmp_path / "c").exists()
    monkeypatch.setattr(shutil, "disk_usage", real)
    monkeypatch.setattr(iisan_cache, "_free_mb", lambda device: (1e-6, "available RAM"))
    with pytest.raises(BenchError, match=r"does not fit in 0 MB available RAM; use fewer taps"):
        build(cfg, "iisan-cached")


def test_gradient_checkpointing_on_a_decoder_and_a_siglip(tmp_path):
    cfg = pair_cfg(tmp_path, "tiny-qwen2", "tiny-siglip")
    model, encoders, prep = build(cfg, "lora-gc")
    assert all(e.is_gradient_checkpointing for e in encoders)
    out = TrainOutcome()
    Trainer(model, prep.split, cfg.train, cfg.eval, CPU, 0, progress=False).train_epoch(1, out)
    assert out.steps == [2]


def test_a_pretrained_decoder_and_a_dual_models_vision_tower_load_from_local_folders(tmp_path):
    """Real loading code on local folders: a Llama-family checkpoint whose tokenizer has no pad token,
    and a CLIP checkpoint (text + vision) of which only the vision tower is built."""
    from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel

    from benchmark.models.backbones import bert_tokenizer

    arch = dict(ARCHS["tiny-llama"])
    llama = AutoModel.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch))
    llama.save_pretrained(tmp_path / "llama")
    tok = bert_tokenizer()
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "llama")
    clip = CLIPModel(CLIPConfig(text_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                             "intermediate_size": 64},
                                vision_config={"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 2,
                                               "intermediate_size": 64, "patch_size": 8, "image_size": 32}))
    clip.save_pretrained(tmp_path / "clip")
    cfg = load_config(None, {"backbone": {"text_model": str(tmp_path / "llama"), "vision_model": str(tmp_path / "clip"),
                                          "init": "pretrained"}})
    b = load_backbones(cfg.backbone, cfg.data)
    assert b.tokenizer.pad_token is not None and b.pooling == {"text": "last", "vision": "cls"}
    assert all(torch.equal(p, llama.state_dict()[n]) for n, p in b.text.state_dict().items())
    assert type(b.vision).__name__ == "CLIPVisionModel" and b.vision.config.hidden_size == 48
    want = clip.vision_model.embeddings.patch_embedding.weight
    assert torch.equal(b.vision.embeddings.patch_embedding.weight, want)
    assert b.info["text_encoder"]["family"] == "Llama" and b.info["vision_encoder"]["family"] == "CLIP"


def _bert(V, H, L, I, P=512, T=2):  # noqa: E741 - the usual names
    layer = 4 * (H * H + H) + (H * I + I) + (I * H + H) + 2 * 2 * H
    return V * H + P * H + T * H + 2 * H + L * layer


def _vit(H, L, I, patch=16, size=224):  # noqa: E741
    layer = 4 * (H * H + H) + (H * I + I) + (I * H + H) + 2 * 2 * H
    tokens = (size // patch) ** 2 + 1
    return H + tokens * H + 3 * patch * patch * H + H + L * layer + 2 * H


def _siglip(H, L, I, patch=16, size=224):  # noqa: E741 - no class token, no attention-pooling head
    layer = 4 * (H * H + H) + (H * I + I) + (I * H + H) + 2 * 2 * H
    return 3 * patch * patch * H + H + (size // patch) ** 2 * H + L * layer + 2 * H


def _llama(V, H, L, I, heads, kv, head_dim, qkv_bias=False):  # noqa: E741
    attn = H * heads * head_dim + 2 * H * kv * head_dim + heads * head_dim * H
    bias = heads * head_dim + 2 * kv * head_dim if qkv_bias else 0
    return V * H + L * (attn + bias + 3 * H * I + 2 * H) + H


@pytest.mark.parametrize("preset, text, vision", [
    ("large", _bert(30522, 1024, 24, 4096), _vit(1024, 24, 4096)),
    ("llama-siglip", _llama(128256, 2048, 16, 8192, 32, 8, 64), _siglip(768, 12, 3072)),
    ("llama8b-vit", _llama(128256, 4096, 32, 14336, 32, 8, 128), _vit(768, 12, 3072)),
    ("qwen-vit", _llama(151936, 1536, 28, 8960, 12, 2, 128, qkv_bias=True), _vit(768, 12, 3072)),
])
def test_large_presets_on_the_meta_device_match_analytic_counts_and_model_cards(preset, text, vision):
    cfg = load_config(None, {"backbone": {"preset": preset}, "data": {"image_size": 224}})
    encs = meta_encoders(cfg.backbone, cfg.data)
    count = {k: sum(p.numel() for p in m.parameters()) for k, m in encs.items()}
    assert all(p.is_meta for m in encs.values() for p in m.parameters())
    assert count["text"] == text
    assert count["vision"] == vision
    card = {"llama-siglip": 1_235_814_400,  # Llama-3.2-1B: 1.23B, tied embeddings
            "llama8b-vit": 8_030_261_248 - 128256 * 4096,  # Llama-3.1-8B's 8.03B less its untied LM head
            "qwen-vit": 1_543_714_304,  # Qwen2.5-1.5B: 1.54B, 1.31B without embeddings
            "large": 335_141_888 - (1024 * 1024 + 1024)}  # bert-large-uncased's 335M less the pooler
    assert count["text"] == card[preset]
    if preset == "qwen-vit":
        assert round((count["text"] - 151936 * 1536) / 1e9, 2) == 1.31
