"""Analytic FLOPs against hand arithmetic and against torch's own FLOP counter."""

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, ViTConfig, ViTModel

from benchmark.measure.flops import (
    EncoderShape,
    encoder_flops,
    forward_flops_per_item,
    items_encoded_per_epoch,
    layer_flops,
    peak_flops,
    vision_shape,
)


def test_layer_flops_by_hand():
    # n=4 tokens, h=8, f=16: 8*4*64 + 4*16*8 + 4*4*8*16 = 2048 + 512 + 2048
    assert layer_flops(4, 8, 16) == 4608
    assert encoder_flops(EncoderShape(2, 8, 16, 4)) == 2 * 4608


def test_bert_base_forward_matches_known_scale():
    # BERT-base, 30 tokens: 12 * (8*30*768^2 + 4*900*768 + 4*30*768*3072) = 12 * 427,438,080 = 5.1293e9
    cfg = BertConfig()
    from benchmark.measure.flops import text_shape
    assert encoder_flops(text_shape(cfg, 30)) == 12 * 427_438_080


def test_analytic_matches_torch_flop_counter_on_small_models():
    bert = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                      vocab_size=100, attn_implementation="eager")
    vit = ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                    image_size=32, patch_size=8, attn_implementation="eager")
    models = (BertModel(bert, add_pooling_layer=False), ViTModel(vit, add_pooling_layer=False))
    with FlopCounterMode(display=False) as fc:
        models[0](input_ids=torch.ones(3, 12, dtype=torch.long))
        models[1](pixel_values=torch.zeros(3, 3, 32, 32))
    analytic = 3 * forward_flops_per_item(bert, vit, tokens=12)  # 3 items, forward only
    assert abs(fc.get_total_flops() - analytic) / analytic < 0.02
    assert vision_shape(vit).seq_len == 17


def test_items_encoded_counts_distinct_items_per_batch():
    train = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [0, 0, 7]])
    # batch size 4: one batch with items {0..7} -> 8; batch size 1: per-row distinct counts 3+3+3+2
    assert items_encoded_per_epoch(train, 4, seed=1, epoch=1) == 8
    assert items_encoded_per_epoch(train, 1, seed=1, epoch=1) == 11


def test_peak_flops_lookup():
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("cpu") is None
