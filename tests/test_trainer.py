"""Trainer mechanics: host-built batches, split evaluation timings, paper protocol, traces."""

import json

import pytest
import torch

from benchmark.launch.recipe import method_config
from benchmark.launch.sweep import run_benchmark
from benchmark.training.trainer import TrainOutcome
from tests.helpers import build, small, small_cfg, trainer_for


def test_epoch_batches_are_the_shuffled_rows_with_their_distinct_items_bucketed():
    trainer, prep = trainer_for(batch_size=16)
    order = torch.randperm(prep.split.train.size(0), generator=torch.Generator().manual_seed(3))
    batches = trainer._epoch_batches(order, 3)
    assert len(batches) == 3
    for step, b in enumerate(batches):
        want = prep.split.train[order[step * 16:(step + 1) * 16]]
        distinct = torch.unique(want)  # sorted, padding 0 included once
        assert torch.equal(b.ids, want) and torch.equal(b.host_uniq, b.uniq)
        # the next multiple of 64, but never more rows than there are items (and padding)
        assert b.uniq.numel() == min(-(-distinct.numel() // 64) * 64, prep.data.n_items + 1)
        assert torch.equal(b.uniq[:distinct.numel()], distinct) and not b.uniq[distinct.numel():].any()
        assert torch.equal(b.uniq[b.inverse], want.reshape(-1))
    unbucketed, _ = trainer_for(batch_size=16, item_bucket=1)
    assert torch.equal(unbucketed._epoch_batches(order, 1)[0].uniq, torch.unique(prep.split.train[order[:16]]))


@pytest.mark.parametrize("name", ["fft", "iisan", "iisan-cached"])
def test_bucket_padding_never_changes_the_loss_or_its_gradients(name, tmp_path):
    trainer, prep = trainer_for(name, tmp_path, batch_size=4, dropout=0.0)  # few distinct items: room to pad
    trainer.model.eval()  # no dropout anywhere: the two passes must agree
    order = torch.randperm(prep.split.train.size(0), generator=torch.Generator().manual_seed(4))
    padded = trainer._epoch_batches(order, 1)[0]
    uniq, inverse = torch.unique(padded.ids.reshape(-1), return_inverse=True)
    assert padded.uniq.numel() > uniq.numel()  # there is padding to test
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def loss_and_grads(distinct):
        trainer.model.zero_grad(set_to_none=True)
        loss = trainer.model.loss(padded.ids, trainer.log_pop, distinct)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in params]

    a, ga = loss_and_grads((uniq, inverse))
    b, gb = loss_and_grads((padded.uniq, padded.inverse))
    assert torch.isfinite(a) and torch.allclose(a, b, rtol=1e-6, atol=1e-6)
    assert all(torch.allclose(x, y, rtol=1e-5, atol=1e-7) for x, y in zip(ga, gb))


def test_loss_with_host_distinct_items_equals_the_on_device_unique():
    trainer, prep = trainer_for()
    trainer.model.eval()  # no dropout: both paths must give the same number
    ids = prep.split.train[:32]
    uniq, inverse = torch.unique(ids.reshape(-1), return_inverse=True)
    a = trainer.model.loss(ids, trainer.log_pop)
    b = trainer.model.loss(ids, trainer.log_pop, (uniq, inverse))
    assert torch.isfinite(a) and torch.equal(a, b)


def test_evaluation_times_item_table_and_each_split_ranking_apart():
    trainer, _ = trainer_for()
    out = TrainOutcome()
    valid, test = trainer.evaluate(out)
    assert len(out.item_table_s) == 1 and out.item_table_s[0] > 0
    assert len(out.rank_s) == 2 and all(s > 0 for s in out.rank_s)  # valid and test
    timing = out.timing()
    assert timing["eval_item_table_s"] == out.item_table_s[0]
    assert timing["eval_rank_s"] == sum(out.rank_s) / 2
    assert set(valid) == set(test) == {"hr@10", "ndcg@10", "mrr@10"}


def test_max_steps_bounds_one_epoch():
    trainer, _ = trainer_for(batch_size=8)
    out = TrainOutcome()
    trainer.train_epoch(5, out, max_steps=2)
    assert out.samples == 16 and len(out.step_s) == 2


def test_paper_protocol_resolves_to_the_papers_recipe_per_method(tmp_path):
    base = small_cfg(tmp_path)
    assert method_config(base, "fft") is base  # off: the configured recipe for everyone
    cfg = small_cfg(tmp_path, train={"max_steps_per_epoch": 3, "paper_protocol": True})
    got = {n: (lambda t: (t.batch_size, t.lr_head, t.lr_peft, t.lr_backbone, t.lr_backbone_vision))(method_config(cfg, n).train)
           for n in ("fft", "lora", "adapter", "bitfit", "iisan", "iisan-cached")}
    d = cfg.train  # what the paper leaves as configured (e.g. FFT has no added weights)
    assert got == {  # batch, head, added weights, BERT, ViT (IISAN's code and paper)
        "fft": (32, 1e-4, d.lr_peft, 5e-5, 1e-4), "bitfit": (32, 2e-4, d.lr_peft, 5e-5, 1e-4),
        "lora": (32, 2e-4, 4e-4, 5e-5, 1e-4),
        "adapter": (32, 2e-4, 4e-4, d.lr_backbone, d.lr_backbone_vision),
        # IISAN: the text and image rates its name grouping gives side-network parameters (lr_groups)
        "iisan": (64, 2e-4, 1e-4, 5e-5, 1e-4), "iisan-cached": (64, 2e-4, 1e-4, 5e-5, 1e-4)}
    for n in got:  # selection by valid HR@10 with patience 11, popularity count / total
        t = method_config(cfg, n).train
        assert (t.select_by, t.patience, t.popularity, t.architecture) == ("hr", 11, "count", "paper")
    lora = method_config(cfg, "lora")
    assert lora.methods["lora"] == {"alpha": 1, "dropout": 0.0}  # scaling 1/8 at r = 8
    mine = small_cfg(tmp_path, train={"paper_protocol": True}, methods={"lora": {"alpha": 4}})
    assert method_config(mine, "lora").methods["lora"] == {"alpha": 4, "dropout": 0.0}  # explicit options win
    assert method_config(cfg, "fft").hash_for("fft") != cfg.hash_for("fft")


def test_the_vision_encoder_trains_at_its_own_rate(tmp_path):
    trainer, _ = trainer_for("fft", tmp_path, lr_backbone=5e-5, lr_backbone_vision=1e-4, lr_head=1e-4)
    by_group = {g["name"]: (g["lr"], sum(p.numel() for p in g["params"])) for g in trainer.optimizer.param_groups}
    vision = sum(p.numel() for p in trainer.model.item_tower.vision.parameters())
    assert by_group["backbone_vision"] == (1e-4, vision) and by_group["backbone"][0] == 5e-5


def test_paper_protocol_run_records_the_batch_size_used(tmp_path):
    cfg = small_cfg(tmp_path, train={"max_steps_per_epoch": 3, "paper_protocol": True})
    rec = json.loads(run_benchmark(cfg, progress=False, echo=lambda *_: None).read_text())
    assert rec["status"] == "ok"
    assert rec["config"]["resolved"]["train"]["batch_size"] == 32
    assert rec["time"]["items_encoded_per_epoch"] > 0 and rec["time"]["steps_per_epoch"] == 3
    # resume: the same config is recognised by its per-method hash and skipped
    lines: list[str] = []
    run_benchmark(cfg, progress=False, echo=lines.append)
    assert any("skipping 1 run(s)" in ln for ln in lines)


def test_profile_steps_writes_a_trace_after_training(tmp_path):
    cfg = small_cfg(tmp_path, train={"max_steps_per_epoch": 3, "profile_steps": 2})
    rec = json.loads(run_benchmark(cfg, progress=False, echo=lambda *_: None).read_text())
    assert rec["status"] == "ok"
    out = tmp_path / "out"
    assert rec["trace"]["steps"] == 2 and rec["trace"]["table"] == "traces/fft-0.txt"
    table = (out / rec["trace"]["table"]).read_text()
    assert "self_cpu_time_total" in table.splitlines()[0] and "aten::" in table
    assert json.loads((out / rec["trace"]["chrome_trace"]).read_text())["traceEvents"]
    assert len(rec["time"]["epoch_s"]) == 1  # the traced steps are not an epoch of the result


def test_resident_memory_counts_item_inputs_and_parameters_but_not_the_host_image_table():
    from benchmark.launch.factory import resident_mb

    model, encoders, prep = build(small(), "fft")
    d = prep.data
    nbytes = lambda t: t.numel() * t.element_size()  # noqa: E731
    r = resident_mb(model)
    # an uncached tower's buffers: item token ids and masks, plus the encoders' own (BERT's position
    # and token-type id rows: 2 x 64 int64 in the tiny preset); the uint8 images stay on the host
    own = sum(nbytes(b) for enc in encoders if enc is not None for b in enc.buffers())
    assert own == 2 * 64 * 8
    assert r["buffers_mb"] == (nbytes(d.tokens) + nbytes(d.attention_mask) + own) / 2**20
    assert d.images.dtype == torch.uint8 and d.images.shape[1:] == (3, 32, 32)
    assert r["params_mb"] == sum(nbytes(p) for p in model.parameters()) / 2**20
    inputs = model.item_tower.inputs
    assert inputs.images is d.images and all(b is not d.images for b in model.buffers())
    model.to("meta")  # a device move takes parameters and buffers along, never the image table
    assert inputs.images.device.type == "cpu" and inputs.tokens.is_meta


@pytest.mark.slow  # inductor compiles on CPU: 5 s with a warm compile cache, far longer on a fresh machine (#24)
def test_compiled_loss_equals_eager_and_is_compiled_before_the_clock(tmp_path):
    """torch.compile (inductor on CPU here; CUDA graphs with reduce-overhead on a GPU) must give the
    eager loss, on padded distinct-item batches, and compile outside the timed epoch."""
    eager, prep = trainer_for("iisan-cached", tmp_path, dropout=0.0, batch_size=16, compile="off")
    compiled, _ = trainer_for("iisan-cached", tmp_path, dropout=0.0, batch_size=16, compile="default",
                              max_steps_per_epoch=2)
    compiled.model.load_state_dict(eager.model.state_dict())
    out = TrainOutcome()
    compiled.compile_warmup(out, epochs=1)
    assert out.compile.seconds > 0 and out.compile.compiled_shapes == len(compiled.step_shapes(1)) >= 1
    assert compiled.compiled.ready == set(compiled.step_shapes(1)) and out.compile.note is None
    order = torch.randperm(prep.split.train.size(0), generator=torch.Generator().manual_seed(5))
    for e, c in zip(eager._epoch_batches(order, 2), compiled._epoch_batches(order, 2)):
        assert torch.equal(e.ids, c.ids) and torch.equal(e.inverse, c.inverse) and torch.equal(e.uniq, c.uniq)
        a = eager.loss_fn(e.ids, eager.log_pop, (e.uniq, e.inverse))
        b = compiled.compiled.compiled(c.ids, compiled.log_pop, (c.uniq, c.inverse))
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5), (float(a), float(b))
    # the warm-up left the weights as they were (no optimizer step)
    for (n, p), q in zip(compiled.model.state_dict().items(), eager.model.state_dict().values()):
        assert torch.equal(p, q), n


def test_every_slot_workload_encodes_every_slot_and_gives_the_same_loss(tmp_path):
    """The paper's code encodes every slot (B x (L+1), padding and repeats included); ours each
    step's distinct items once. Same loss, counted work: time.items_encoded_per_epoch."""
    distinct, prep = trainer_for("iisan-cached", tmp_path, batch_size=8, dropout=0.0, item_bucket=1)
    slots, _ = trainer_for("iisan-cached", tmp_path, batch_size=8, dropout=0.0, item_bucket=1,
                           encoder_workload="every_slot")
    slots.model.load_state_dict(distinct.model.state_dict())
    order = distinct._order(1)
    d, s = distinct._epoch_batches(order, 2), slots._epoch_batches(order, 2)
    for a, b in zip(d, s):
        assert torch.equal(a.ids, b.ids) and b.uniq.numel() == a.ids.numel() == 8 * 11
        assert a.uniq.numel() == torch.unique(a.ids).numel() < b.uniq.numel()
        distinct.model.eval(), slots.model.eval()
        la = distinct.model.loss(a.ids, distinct.log_pop, (a.uniq, a.inverse))
        lb = slots.model.loss(b.ids, slots.log_pop, (b.uniq, b.inverse))
        assert torch.allclose(la, lb, atol=1e-6)
    out_d, out_s = TrainOutcome(), TrainOutcome()
    distinct.train_epoch(1, out_d, max_steps=2)
    slots.train_epoch(1, out_s, max_steps=2)
    assert out_s.items_encoded == [2 * 8 * 11]
    assert out_d.items_encoded == [sum(torch.unique(b.ids).numel() for b in d)]
    assert out_d.timing()["items_encoded_per_epoch"] == out_d.items_encoded[0]
