"""Every config key, declared once on its dataclass field: default, type, range, role, CLI flag and
help text (``core.keys.setting`` / ``bounded``). Everything else is derived from these fields: the
range checks, the resume hash and the comparability check (a key's role), the CLI's flags and their
help, and ``bench.toml``'s comment for each key (``core.keys.key_doc``; ``tests/test_config_keys.py``
fails when a comment drifts from its field). Loading and validation are in ``config.py``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from core.keys import bounded, setting
from core.presets import PRESET_HELP, PRESETS

PRESET_NAMES = tuple(PRESETS)


@dataclass
class RunConfig:
    methods: list[str] = setting(factory=lambda: ["all"], role="sweep", flag="methods", help=(
        "registry names, \"all\", or wildcards such as \"iisan*\""
    ))
    epochs: int = bounded(4, 1, 1000, flag="epochs", help=(
        "training epochs per method (early stopping may end sooner)"
    ))
    seed: int = bounded(42, 0, 2**32, hi_open=True, flag="seed", help="same seed -> same metrics on CPU")
    device: Literal["auto", "cpu", "cuda"] = setting("auto", role="variant", flag="device", help="auto | cpu | cuda")
    out: str = setting("runs/default", role="sweep", flag="out", help=(
        "results.jsonl, report.md, summary.csv and plots go here"
    ))
    repeats: int = bounded(1, 1, 100, role="sweep", flag="repeats", help=(
        "runs per method; the report shows mean and spread"
    ))
    isolate: bool = setting(True, role="variant", flag="isolate", help=(
        "each (method, repeat) in a fresh child process"
    ))
    nproc: int = bounded(1, 1, 1024, role="variant", flag="nproc", help=(
        "at most the machine's cores (CPU) or GPUs; data-parallel processes per run (torch DDP: "
        "gloo on CPU, NCCL on GPUs; needs isolate): the global batch is sharded over them, the "
        "in-batch softmax still spans all of it"
    ))
    pg_timeout_s: float = bounded(300.0, 5, 86_400, role="sweep", help=(
        "a data-parallel run's process-group timeout: a collective waiting this long on a rank or "
        "node that died fails the run on every rank (nproc > 1 or torchrun)"
    ))
    sample_interval_ms: float = bounded(0.0, 1, 60_000, zero="by device", role="sweep", help=(
        "memory sampler interval; 0 = by device: 10 ms (GPU, NVML), 50 ms (CPU, timeline only)"
    ))
    quiet_check: bool = setting(True, role="sweep", help=(
        "read the CPU time other processes used over each run (and other GPU processes, clocks): "
        "a run that shared its machine is reported as measured on a busy machine"
    ))
    log_to: list[Literal["tensorboard", "mlflow", "wandb"]] = setting(factory=list, role="sweep", flag="log_to", help=(
        "trackers each finished run is sent to (config, per-epoch loss and metrics, final figures), "
        "from the sweep's parent only: OUT/tensorboard, MLflow at $MLFLOW_TRACKING_URI or "
        "sqlite OUT/mlflow.db, W&B offline in OUT/wandb unless $WANDB_MODE says otherwise"
    ))
    floors: Literal["auto", "on", "off"] = setting("auto", role="sweep", help=(
        "auto | on | off: after the sweep, time the plain-PyTorch floor of the same work "
        "(OUT/floors.json; the report shows each method against it); auto = on a GPU"
    ))
    estimate: Literal["auto", "on", "off"] = setting("auto", role="sweep", help=(
        "auto | on | off: after each run, its estimate for the device it ran on (iisan-bench "
        "estimate: predicted memory and step time beside the measured, FLOPs a step, MFU); auto "
        "= on a GPU in the device table, off on CPU"
    ))


@dataclass
class SyntheticConfig:
    users: int = bounded(1000, 2, 100_000, help="number of users")
    items: int = bounded(300, 2, 100_000, help="number of items")
    clusters: int = bounded(8, 1, 10_000, help="latent topics; titles and images reveal an item's topic")
    min_len: int = bounded(6, 3, 1024, help="shortest user sequence")
    max_len: int = bounded(14, 3, 1024, help="longest user sequence (before keeping the last max_seq_len + 3)")
    noise: float = bounded(0.1, 0, 1, help="probability that a user jumps to a random topic before the next item")


@dataclass
class DataConfig:
    dataset: str = setting("synthetic", flag="dataset", help=(
        "\"synthetic\" or a folder in IISAN's TSV format (*_items.tsv + *users*.tsv)"
    ))
    max_seq_len: int = bounded(10, 1, 1024, help="items a user sequence keeps as SASRec input (paper: 10)")
    min_seq_len: int = bounded(5, 3, 1024, note="train, valid and test items", help=(
        "users with fewer interactions are dropped (paper: 5)"
    ))
    text_tokens: int = bounded(30, 2, 512, note="[CLS] and at least one word; BERT's positions", help=(
        "title tokens (paper: 30)"
    ))
    image_size: int = bounded(32, 1, 1024, help=(
        "pixels per side; must be a multiple of the ViT patch size (paper: 224)"
    ))
    images: Literal["real", "synthetic", "none"] = setting("synthetic", flag="images", help=(
        "real (DATASET/images/<id>.jpg|png) | synthetic (seeded per item) | none (text only)"
    ))
    trust_pickle: bool = setting(False, role="sweep", flag="trust_pickle", help=(
        "allow reading the paper's pickled LMDB image store"
    ))
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class BackboneConfig:
    preset: Literal[PRESET_NAMES] = setting("tiny", flag="backbone", help=PRESET_HELP)  # type: ignore[valid-type]
    text_model: str = setting("", help=(
        "override: a local folder, hub id or built-in name (tiny-llama, ...) of a text encoder: BERT, RoBERTa, "
        "ModernBERT, Llama, Mistral, Gemma, Qwen2/3 families"
    ))
    vision_model: str = setting("", help=(
        "override: a local folder, hub id or built-in name (tiny-siglip, ...) of an image encoder: ViT, CLIP, "
        "SigLIP, DINOv2 families"
    ))
    init: Literal["auto", "pretrained", "random"] = setting("auto", flag="init", help=(
        "auto (the preset's weights: minilm's pretrained MiniLM text, base's BERT + ViT; tiny "
        "is random) | pretrained (load weights, offline-safe) | random (architecture only; "
        "efficiency is weight-independent, quality is not)"
    ))
    attn_implementation: Literal["sdpa", "eager"] = setting("sdpa", help="sdpa (fused attention) | eager")
    text_pooling: Literal["auto", "cls", "last", "mean"] = setting("auto", help=(
        "auto (cls for encoder-only families, last for decoder-only LLMs) | cls (first token) | last (last "
        "non-padding token) | mean (over non-padding tokens)"
    ))
    vision_pooling: Literal["auto", "cls", "mean"] = setting("auto", help=(
        "auto (cls for ViT, CLIP and DINOv2; mean for SigLIP, which has no class token) | cls | mean (over patches)"
    ))


@dataclass
class TrainConfig:
    batch_size: int = bounded(64, 1, 65_536, help="user sequences per step (paper: 64)")
    lr_backbone: float = bounded(1e-4, 0, 1, help="pretrained weights that train (FFT, BitFit biases)")
    lr_peft: float = bounded(1e-3, 0, 1, help="new adapter weights (LoRA, adapters, IISAN side networks)")
    lr_head: float = bounded(1e-3, 0, 1, help="projections, fusion and the SASRec user encoder")
    lr_backbone_vision: float = bounded(0.0, 0, 1, note="0 = lr_backbone", help=(
        "the vision encoder's trained weights (FFT, BitFit); 0 = lr_backbone"
    ))
    weight_decay: float = bounded(0.0, 0, 1, help="Adam weight decay")
    precision: Literal["fp32", "bf16", "fp16"] = setting("fp32", flag="precision", help=(
        "fp32 | bf16 | fp16 (autocast)"
    ))
    patience: int = bounded(3, 0, 1000, note="0 = no early stopping", help=(
        "early stopping: epochs without a better validation NDCG@10"
    ))
    max_steps_per_epoch: int = bounded(0, 0, 10_000_000, note="0 = a full epoch", help=(
        "0 = full epoch; >0 bounds the steps per epoch (said in every result)"
    ))
    item_dim: int = bounded(64, 1, 4096, help="item and user embedding size (paper: 64)")
    num_blocks: int = bounded(2, 1, 48, help="SASRec blocks (paper: 2)")
    num_heads: int = bounded(2, 1, 64, help="SASRec heads (paper: 2)")
    dropout: float = bounded(0.1, 0, 1, hi_open=True, help="SASRec dropout")
    paper_protocol: bool = setting(False, help=(
        "true: the IISAN paper's recipe per method: batch size (32 FFT/Adapter/LoRA/BitFit, 64 "
        "IISAN), learning rates, LoRA scaling 1/8, selection by valid HR@10 with patience 11, "
        "popularity count/total, architecture = \"paper\" (docs/protocol.md lists what still "
        "differs)"
    ))
    select_by: Literal["ndcg", "hr", "mrr"] = setting("ndcg", help=(
        "ndcg | hr | mrr: the validation metric (at K = 10) that picks the best epoch"
    ))
    popularity: Literal["smoothed", "count"] = setting("smoothed", help=(
        "smoothed: log((count + 1) / sum) | count: log(count / total), as the paper's code"
    ))
    architecture: Literal["ours", "paper"] = setting("ours", help=(
        "ours (PyTorch defaults) | paper (the paper code's SASRec: ReLU, LN eps 1e-6, bias-free "
        "attention, xavier; GELU after the end-to-end towers' projections; SAN N(0, 0.01) init "
        "and the first intra step gated)"
    ))
    profile_steps: int = bounded(0, 0, 1000, role="sweep", help=(
        ">0: after training, trace this many steps with torch.profiler (OUT/traces/)"
    ))
    compile: Literal["auto", "off", "default", "reduce-overhead", "max-autotune"] = setting("auto", help=(
        "auto | off | default | reduce-overhead (CUDA graphs) | max-autotune: torch.compile the "
        "loss, once per step shape before the first timed step (time.compile_s); auto = the "
        "method's choice on a GPU (iisan-cached: reduce-overhead), off on CPU"
    ))
    compile_budget_s: float = bounded(60.0, 0, 86_400, help=(
        "seconds of compiling and CUDA-graph recording before the clock; past it the step "
        "shapes not yet compiled run eagerly (checked between shapes; time.compile_note says "
        "so)"
    ))
    encoder_workload: Literal["distinct", "every_slot"] = setting("distinct", help=(
        "distinct (each step's distinct items once) | every_slot (the paper's code: every slot, "
        "padding and repeats included; time.items_encoded_per_epoch counts them)"
    ))
    item_bucket: int = bounded(64, 1, 4096, note="1 = no padding", help=(
        "each step's distinct items padded up to a multiple of this (1 = no padding): few "
        "shapes for cuDNN attention plans and compiled graphs; padded rows never reach the loss"
    ))
    sdpa_backend: Literal["auto", "default", "cudnn", "flash", "efficient", "math"] = setting("auto", help=(
        "auto (on a GPU: the fastest backend that runs this method's own loss and evaluation, "
        "masks and dropout included, measured at start-up) | default (torch decides per call) | "
        "cudnn | flash | efficient | math (one that cannot run the method is an error at start)"
    ))


# The IISAN paper's recipe every method shares under ``train.paper_protocol`` (selection by valid HR@10,
# patience 11, popularity count/total, the paper code's model details); each method adds its own
# (``Method.paper_train``: batch size, learning rates). Read by ``paper_common`` and the recipe alone.
PAPER_TRAIN: dict[str, Any] = {"select_by": "hr", "patience": 11, "popularity": "count", "architecture": "paper"}
# ... and on a CUDA device its precision: fp16 autocast with a GradScaler (run.py). On a CPU the
# configured precision stays: CPUs have no fp16 matmul kernels, and the paper's scaler is CUDA's.
PAPER_TRAIN_CUDA: dict[str, Any] = {"precision": "fp16"}


def paper_common(train: TrainConfig) -> TrainConfig:
    """``train`` with the recipe every method shares applied when ``paper_protocol`` is on (what the
    sweep's shared data, e.g. the popularity floor, is prepared under)."""
    return dataclasses.replace(train, **PAPER_TRAIN) if train.paper_protocol else train


@dataclass
class EvalConfig:
    ks: list[int] = field(default_factory=lambda: [10], metadata=bounded(None, 1, 10_000, help=(
        "cut-offs for HR@K, NDCG@K and MRR@K"
    )).metadata)
    masking: Literal["all_history", "history_except_target", "none"] = setting("all_history", help=(
        "all_history (the paper's: every past item masked, a repeated target too, so it counts "
        "as a miss) | history_except_target | none (repeat-aware); the popularity floor uses "
        "the same rule (docs/protocol.md)"
    ))
    eval_batch_size: int = bounded(256, 1, 65_536, help="users scored at once")
    item_batch_size: int = bounded(256, 1, 65_536, help="items encoded at once when building the item table")


@dataclass
class TPMEConfig:
    alpha_time: float = bounded(0.45, 0, 1, role="report", help="weight of min-max normalised time per epoch")
    alpha_params: float = bounded(0.10, 0, 1, role="report", help="weight of min-max normalised trainable parameters")
    alpha_memory: float = bounded(0.45, 0, 1, role="report", help="weight of min-max normalised peak memory")
    reference: str = setting("fft", role="report", help="method the report states relative costs against")
