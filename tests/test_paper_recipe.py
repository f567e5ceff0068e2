"""The paper's recipe, its last differences (#25): each one checked against the paper's code's value
(GAIR-Lab/IISAN, Code_Uncached): learning rate per IISAN parameter by name, the adapter's position
relative to the sub-layer's dropout, SASRec's FFN dropout, the image projection's init, the frozen
encoders' mode, and the precision in the recipe and the record."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.launch.recipe import method_config
from benchmark.models.recommender import SASRec
from benchmark.training.trainer import Trainer
from methods.adapter import Adapted
from tests.helpers import CPU, build, small


def _lr_by_name(cfg, name: str) -> dict[str, float]:
    """Method ``name``'s item-tower parameters by name -> the learning rate its optimizer gives them."""
    model, _, prep = build(cfg, name)
    trainer = Trainer(model, prep.split, cfg.train, cfg.eval, CPU, seed=1, progress=False)
    lr = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    return {n: lr[id(p)] for n, p in model.item_tower.named_parameters() if p.requires_grad}


def test_iisan_learning_rates_follow_the_papers_name_grouping():
    cfg = method_config(small(train={"paper_protocol": True}), "iisan")
    assert cfg.methods["iisan"]["lr_groups"] == "paper"
    got = _lr_by_name(cfg, "iisan")
    # run.py's groups for IISANAdaptedMModel's names: fc_bert -> fine_tune_lr_text 5e-5; fc_cv and
    # side_gate_params_cv -> fine_tune_lr_image 1e-4; *_adapter_list -> adapter lrs 1e-4; fc_mm,
    # side_gate_params_text/_mm, title.fc, classifier, fc_mm_down, com_dense -> lr 2e-4
    paper = {"side.branches.text.out": 5e-5, "side.branches.image.out": 1e-4, "side.branches.image.gates": 1e-4,
             "side.branches.text.gates": 2e-4, "side.branches.inter.gates": 2e-4, "side.branches.inter.out": 2e-4,
             "side.branches.text.blocks": 1e-4, "side.branches.image.blocks": 1e-4,
             "side.branches.inter.blocks": 1e-4, "side.proj": 2e-4, "side.fuse": 2e-4}
    for name, lr in got.items():
        want = next(v for k, v in paper.items() if name.startswith(k))
        assert lr == pytest.approx(want), name
    assert {k for k in paper if any(n.startswith(k) for n in got)} == set(paper)  # every group was seen
    ours = _lr_by_name(small(), "iisan")  # side: the branches at lr_peft, projections and fusion at lr_head
    assert {n: v for n, v in ours.items() if n.startswith("side.branches.")} == \
        {n: 1e-3 for n in ours if n.startswith("side.branches.")}


def _bert_sites(tower):
    return [m for m in tower.text.modules() if isinstance(m, Adapted)]


@pytest.mark.parametrize("order", ["dropout_first", "adapter_first"])
def test_adapter_acts_after_the_sub_layers_dropout_as_the_paper(order):
    """The paper's BertAdaptedSelfOutput: LayerNorm(adapter(dropout(dense(h))) + input)."""
    cfg = small(**{"adapter": {"order": order}})
    model, _, _ = build(cfg, "adapter")
    tower = model.item_tower
    sites = _bert_sites(tower)
    assert len(sites) == 2 * tower.text.config.num_hidden_layers
    self_out = tower.text.encoder.layer[0].attention.output  # BertSelfOutput
    p = tower.text.config.hidden_dropout_prob
    assert p > 0  # the order only matters with dropout on
    self_out.train()
    h, inp = torch.randn(3, 5, tower.text.config.hidden_size), torch.randn(3, 5, tower.text.config.hidden_size)
    torch.manual_seed(7)
    got = self_out(h, inp)
    torch.manual_seed(7)
    dense, adapter = self_out.dense.base, self_out.dense.adapter
    inner = adapter(F.dropout(dense(h), p, True)) if order == "dropout_first" else F.dropout(adapter(dense(h)), p, True)
    assert torch.allclose(got, self_out.LayerNorm(inner + inp), atol=1e-6)
    n_dropouts = sum(isinstance(m, nn.Dropout) and m.p == p for m in self_out.modules())
    assert n_dropouts == 1  # moved, not doubled (the adapter's own inner dropout is p = 0)


def test_sasrec_ffn_drops_out_only_after_its_second_linear_under_the_papers_architecture():
    paper, ours = SASRec(blocks=2, architecture="paper"), SASRec(blocks=2)
    count = lambda m: sum(isinstance(x, nn.Dropout) for x in m.modules())  # noqa: E731
    # the paper: embedding dropout + per block (after the attention's output Linear, after the FFN)
    assert count(paper) == 1 + 2 * 2
    assert count(ours) == 1 + 3 * 2  # PyTorch's layer also drops after the FFN's activation
    layer = paper.encoder.layers[0].train()
    x = torch.randn(2, 4, 64)
    torch.manual_seed(3)
    got = layer._ff_block(x)
    torch.manual_seed(3)
    want = F.dropout(layer.linear2(F.relu(layer.linear1(x))), layer.dropout2.p, True)
    assert torch.allclose(got, want, atol=1e-6)


def _xavier_std(lin: nn.Linear) -> float:
    return math.sqrt(2.0 / (lin.in_features + lin.out_features))


@pytest.mark.parametrize("name, proj", [("fft", lambda t: t.image_proj), ("iisan", lambda t: t.side.proj["image"])])
def test_image_projection_is_xavier_normal_with_zero_bias_under_the_papers_architecture(name, proj):
    paper = proj(build(small(train={"architecture": "paper"}), name)[0].item_tower)
    ours = proj(build(small(), name)[0].item_tower)
    assert torch.all(paper.bias == 0)
    assert paper.weight.std().item() == pytest.approx(_xavier_std(paper), rel=0.1)
    # PyTorch's default: kaiming-uniform, bound 1/sqrt(fan_in), so std 1/sqrt(3 fan_in); biases not zero
    assert ours.weight.std().item() == pytest.approx(1 / math.sqrt(3 * ours.in_features), rel=0.1)
    assert torch.any(ours.bias != 0)


def test_iisan_encoders_run_with_dropout_while_training_only_under_the_papers_architecture():
    paper = build(small(train={"architecture": "paper"}), "iisan")[0].item_tower
    ours = build(small(), "iisan")[0].item_tower
    ids = torch.arange(1, 9)
    for tower, dropout in ((paper, True), (ours, False)):
        tower.train()
        assert tower.source.text.training is dropout and tower.source.vision.training is dropout
        a, b = tower.source(ids)[0], tower.source(ids)[0]
        assert torch.equal(a, b) is not dropout  # dropout on: two passes differ
        tower.eval()
        assert not tower.source.text.training
        assert torch.equal(tower.source(ids)[0], tower.source(ids)[0])
        assert not any(p.requires_grad for p in tower.source.parameters())


@pytest.mark.parametrize("device, precision", [("cuda", "fp16"), ("cpu", "fp32")])
def test_paper_protocol_trains_in_fp16_on_cuda_and_keeps_the_configured_precision_on_cpu(device, precision):
    cfg = small(train={"paper_protocol": True})
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device=device))
    for name in ("fft", "iisan", "iisan-cached", "lora", "adapter", "bitfit"):
        assert method_config(cfg, name).train.precision == precision


def test_the_record_and_report_say_the_precision_and_whether_a_grad_scaler_ran(tmp_path):
    from benchmark.launch.prepare import prepare
    from benchmark.launch.runner import run_method
    from core.record import RunRecord
    from reports.load import Run
    from reports.header import _precision

    cfg = small(tmp_path, train={"paper_protocol": True})
    rec = run_method(cfg, "fft", prepare(cfg), CPU, progress=False, sample_memory=False)
    assert rec.status == "ok", rec.error
    assert rec.config["resolved"]["train"]["precision"] == "fp32" and rec.env.grad_scaler is False

    def run(precision, scaler):
        raw = {"config": {"resolved": {"train": {"precision": precision}}}, "env": {"grad_scaler": scaler}}
        return Run(1, RunRecord.from_dict({"method": "fft", **raw}))

    assert _precision([run("fp16", True)]) == "fp16 autocast with a GradScaler"
    assert _precision([run("fp32", False), run("bf16", False)]) == "fp32 / bf16 autocast"


def test_loras_fresh_base_weights_reproduce_the_papers_loralib_layers():
    """base_weights = "fresh": the adapted Q/V Linears are re-initialised, their weights frozen and their
    biases trained: the paper's count adds 2 x hidden biases per layer of each encoder."""
    from peft.tuners.lora import LoraLayer

    from tests.helpers import tower_and_base, trainable

    ours, (text, vision), _ = build(small(), "lora")
    fresh = build(small(**{"lora": {"base_weights": "fresh"}}), "lora")[0]
    t, v = text.config, vision.config
    assert trainable(fresh) - trainable(ours) == 2 * (t.hidden_size * t.num_hidden_layers
                                                      + v.hidden_size * v.num_hidden_layers)
    tower, (base_text, _), _ = tower_and_base(small(**{"lora": {"base_weights": "fresh"}}), "lora")
    layers = [m for m in tower.text.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2 * t.num_hidden_layers
    for layer in layers:
        base = layer.get_base_layer()
        assert not base.weight.requires_grad and base.bias.requires_grad
    q0 = layers[0].get_base_layer().weight
    same = [base_text.encoder.layer[0].attention.self.query.weight]
    assert same and not torch.equal(q0, same[0])  # the pretrained Q is gone, as in the paper's code
