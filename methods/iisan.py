"""IISAN (Fu et al., SIGIR 2024): a decoupled side network over the frozen encoders' tapped states.

The backbones are frozen and run without gradients (``output_hidden_states``); of every tapped
hidden state only the CLS vector is kept. Taps default to the embedding output and every other
layer, ending at the last one (0, 2, 4, ..., L: the paper's "LayerDrop"). Three branches:

- intra text:  h_l = SAN(g_l * x_l^text  + (1 - g_l) * h_{l-1})
- intra image: the same over the image encoder's taps
- inter:       m_l = SAN(m_{l-1} + g_l * x_l^image + (1 - g_l) * x_l^text)

with SAN(x) = x + Linear(b -> H)(ReLU(Linear(H -> b)(x))), b = 64, and gates
g = sigmoid(w / 0.1), w initialised at 0 (g = 0.5). The first intra step has no previous state
(h_0 = SAN(x_0); under ``train.architecture = "paper"`` h_0 = SAN(g_0 * x_0), the paper's code, whose
SAN weights also start at N(0, 0.01) with zero biases); the inter stream starts from m_{-1} = 0. ``fusion = "add"`` replaces the gated
mix by a plain sum (no gates). Each branch ends in Linear(H -> H), then a projection to the item
dimension; the branches are concatenated and fused by a Linear. Text-only runs (images = none)
keep only the intra-text branch.

``SideNetwork`` is the one implementation both strategies train. ``iisan`` feeds it from the live
backbones (``BackboneTaps``); ``iisan-cached`` from a cache of the same tapped CLS states
(``CachedTaps``, built by ``methods.iisan_cache`` with ``BackboneTaps`` itself). The side network
is built before the cache, from the same random state, so the two start from identical weights.
The frozen backbones always run in eval mode (no dropout), so the live and cached states agree.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from benchmark.config import TrainConfig
from benchmark.errors import BenchError
from benchmark.record import CacheCost

from ._common import encoders, freeze, frozen_in_compute_dtype, is_meta
from .base import BuildContext, ItemInputs, ItemTower, Method
from .registry import register_method

GATE_TEMPERATURE = 0.1


@dataclass
class IISANOptions:
    modality: Literal["intra_inter", "intra", "inter"] = "intra_inter"  # which branches
    fusion: Literal["gated", "add"] = "gated"  # how a tapped state joins the side stream
    bottleneck: int = 64  # SAN block width
    taps: list[int] = field(default_factory=list)  # hidden states to tap (0 = embeddings); [] = 0,2,...,L

    def check(self, key: str) -> None:
        """Ranges, with errors naming ``key`` (the method's own [methods.NAME] table)."""
        self.key = key  # later errors (taps out of range, modality) name the same table
        if self.bottleneck <= 0:
            raise BenchError(f"'{key}.bottleneck' must be > 0, got {self.bottleneck}")
        if any(t < 0 for t in self.taps):
            raise BenchError(f"'{key}.taps' must be layer indices >= 0, got {self.taps}")
        if len(set(self.taps)) != len(self.taps):
            raise BenchError(f"'{key}.taps' has duplicates: {self.taps}")


@dataclass
class IISANCachedOptions(IISANOptions):
    cache_dir: str = ""  # "" = $IISAN_BENCH_CACHE, else $XDG_CACHE_HOME/iisan-bench, else ~/.cache/iisan-bench
    cache_dtype: Literal["fp16", "fp32"] = "fp16"  # storage type of the cached states
    build_batch_size: int = 0  # items encoded at once while building; 0 = sized to build in <= 4 GB

    def check(self, key: str) -> None:
        super().check(key)
        if self.build_batch_size < 0:
            raise BenchError(f"'{key}.build_batch_size' must be >= 0 (0 = auto), got {self.build_batch_size}")


def options_key(opts: IISANOptions) -> str:
    """The [methods.NAME] table these options came from (set by ``check``), for later errors."""
    return getattr(opts, "key", "methods.iisan")


def default_taps(n_layers: int) -> list[int]:
    """Every other hidden state, ending at the last layer: 0, 2, ..., L for even L."""
    return sorted(range(n_layers, -1, -2))


def resolve_taps(opts: IISANOptions, models: dict[str, nn.Module]) -> dict[str, list[int]]:
    """Tapped hidden-state indices per encoder kind (text, vision)."""
    out = {}
    for kind, model in models.items():
        n_layers = model.config.num_hidden_layers
        taps = sorted(opts.taps) if opts.taps else default_taps(n_layers)
        bad = [t for t in taps if t > n_layers]
        if bad:
            raise BenchError(f"'{options_key(opts)}.taps': {bad} out of range for the {kind} encoder "
                             f"(hidden states 0..{n_layers})")
        out[kind] = taps
    return out


# --------------------------------------------------------------------------- the side network


class SAN(nn.Module):
    """Side adapted block: x + Linear(b -> H)(ReLU(Linear(H -> b)(x))).

    ``paper_init``: weights N(0, 0.01) and zero biases, as the paper's code (near-identity at
    start); else PyTorch's default Linear init."""

    def __init__(self, dim: int, bottleneck: int, paper_init: bool = False):
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        if paper_init:
            for lin in (self.down, self.up):
                nn.init.normal_(lin.weight, std=0.01)
                nn.init.zeros_(lin.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class Branch(nn.Module):
    """One side stream over the taps: intra (one modality) or inter (text + image).

    ``paper``: the paper's code: SAN blocks with its init, and the first intra step gated against a
    zero state (h_0 = SAN(g_0 * x_0)), one more gate; else h_0 = SAN(x_0)."""

    def __init__(self, dim: int, n_taps: int, bottleneck: int, fusion: str, inter: bool, paper: bool = False):
        super().__init__()
        self.inter = inter
        self.first_gated = paper and not inter and fusion == "gated"
        self.blocks = nn.ModuleList(SAN(dim, bottleneck, paper) for _ in range(n_taps))
        n_gates = n_taps if inter or self.first_gated else n_taps - 1
        self.gates = nn.Parameter(torch.zeros(n_gates)) if fusion == "gated" and n_gates > 0 else None
        self.out = nn.Linear(dim, dim)

    def gate(self, i: int) -> torch.Tensor | None:
        return None if self.gates is None else torch.sigmoid(self.gates[i] / GATE_TEMPERATURE)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, taps, H] (text for inter), y [N, taps, H] (image, inter only) -> [N, H]."""
        h = None
        for i, block in enumerate(self.blocks):
            if self.inter:
                g = self.gate(i)
                mix = y[:, i] + x[:, i] if g is None else g * y[:, i] + (1 - g) * x[:, i]
                h = block(mix if h is None else h + mix)
            elif self.first_gated:
                g = self.gate(i)
                h = block(g * x[:, 0] if h is None else g * x[:, i] + (1 - g) * h)
            elif h is None:
                h = block(x[:, 0])
            else:
                g = self.gate(i - 1)
                h = block(x[:, i] + h if g is None else g * x[:, i] + (1 - g) * h)
        return self.out(h)


class SideNetwork(nn.Module):
    """The IISAN side network: branches -> per-branch projection to item_dim -> concat -> Linear."""

    def __init__(self, text_dim: int, image_dim: int | None, text_taps: int, image_taps: int | None,
                 opts: IISANOptions, item_dim: int, architecture: str = "ours"):
        super().__init__()
        has_image = image_dim is not None
        paper = architecture == "paper"
        if opts.modality == "inter" and not has_image:
            raise BenchError(f"'{options_key(opts)}.modality' = 'inter' needs images (data.images is 'none'); use 'intra'")
        branches: dict[str, Branch] = {}
        if opts.modality in ("intra_inter", "intra") or not has_image:
            branches["text"] = Branch(text_dim, text_taps, opts.bottleneck, opts.fusion, False, paper)
            if has_image:
                branches["image"] = Branch(image_dim, image_taps, opts.bottleneck, opts.fusion, False, paper)
        if has_image and opts.modality in ("intra_inter", "inter"):
            if text_dim != image_dim or text_taps != image_taps:
                raise BenchError(f"'methods.iisan': the inter branch needs text and image states of equal width "
                                 f"and tap count (text {text_dim} x {text_taps} taps, image {image_dim} x "
                                 f"{image_taps} taps); use modality = 'intra' or matching encoders/taps")
            branches["inter"] = Branch(text_dim, text_taps, opts.bottleneck, opts.fusion, True, paper)
        self.branches = nn.ModuleDict(branches)
        dims = {"text": text_dim, "image": image_dim, "inter": text_dim}
        self.proj = nn.ModuleDict({k: nn.Linear(dims[k], item_dim) for k in branches})
        self.fuse = nn.Linear(len(branches) * item_dim, item_dim) if len(branches) > 1 else None

    def forward(self, text: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """text [N, taps, Ht], image [N, taps, Hv] or None -> item embeddings [N, item_dim]."""
        outs = []
        for name, branch in self.branches.items():
            h = branch(text) if name == "text" else branch(image) if name == "image" else branch(text, image)
            outs.append(self.proj[name](h))
        return outs[0] if self.fuse is None else self.fuse(torch.cat(outs, dim=-1))

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "peft": [], "head": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups["peft" if name.startswith("branches.") else "head"].append(p)
        return groups


# --------------------------------------------------------------------------- where the states come from


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer blocks of a BERT- or ViT-family encoder, in order."""
    enc = getattr(model, "encoder", None)
    for name in ("layer", "layers"):
        layers = getattr(enc, name, None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise BenchError(f"{type(model).__name__}: no encoder.layer(s) to tap; IISAN needs a BERT- or ViT-family encoder")


class TapCLS:
    """Forward hooks that keep only the CLS vector of the tapped hidden states.

    Why hooks rather than ``output_hidden_states=True``: that keeps every layer's full hidden states
    ([N, tokens, H] x (L + 1)) alive until the forward ends, 13 x 197 x 768 floats an image for
    ViT-base; the side network needs one vector of each tapped layer. Hidden state 0 is the
    embeddings' output and state i the i-th block's output, exactly as in ``hidden_states``.
    """

    def __init__(self, model: nn.Module, taps: list[int]):
        self.taps = taps
        self.out: dict[int, torch.Tensor] = {}
        modules = [model.embeddings, *encoder_layers(model)]
        self.handles = [modules[t].register_forward_hook(self._hook(t)) for t in taps]

    def _hook(self, tap: int):
        def keep(module, args, output):
            h = output[0] if isinstance(output, (tuple, list)) else output
            self.out[tap] = h[:, 0]
        return keep

    def collect(self) -> torch.Tensor:
        """[N, taps, H] of the forward just run."""
        got = torch.stack([self.out[t] for t in self.taps], dim=1)
        self.out.clear()
        return got


class BackboneTaps(nn.Module):
    """CLS vectors of the tapped hidden states, computed by the frozen backbones without gradients."""

    def __init__(self, models: dict[str, nn.Module], inputs: ItemInputs, taps: dict[str, list[int]]):
        super().__init__()
        self.text = models["text"]
        self.vision = models.get("vision")
        self.inputs = inputs
        self.taps = taps
        freeze(self.text, self.vision)
        self._tap = {"text": TapCLS(self.text, taps["text"])}
        if self.vision is not None:
            self._tap["vision"] = TapCLS(self.vision, taps["vision"])
        self.train(False)

    def train(self, mode: bool = True) -> "BackboneTaps":
        super().train(mode)
        self.text.eval()  # frozen feature extractors: never dropout, same states as the cache
        if self.vision is not None:
            self.vision.eval()
        return self

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        self.text(**self.inputs.text(ids))
        text = self._tap["text"].collect()
        image = None
        if self.vision is not None:
            self.vision(pixel_values=self.inputs.pixels(ids).to(text.dtype))
            image = self._tap["vision"].collect()
        return text, image


class CachedTaps(nn.Module):
    """The same states read from a cache tensor per modality [n_items+1, taps, H] on the device.

    Rows are stored as deviations from a per-(tap, dim) fp32 offset (see ``methods.iisan_cache``).
    """

    def __init__(self, text: tuple[torch.Tensor, torch.Tensor], image: tuple[torch.Tensor, torch.Tensor] | None):
        super().__init__()
        self.register_buffer("text", text[0], persistent=False)
        self.register_buffer("text_offset", text[1], persistent=False)
        self.has_image = image is not None
        self.register_buffer("image", image[0] if image is not None else torch.zeros(0), persistent=False)
        self.register_buffer("image_offset", image[1] if image is not None else torch.zeros(0), persistent=False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        text = self.text[ids].float() + self.text_offset
        return text, (self.image[ids].float() + self.image_offset if self.has_image else None)


class IISANTower(ItemTower):
    """Item index -> tapped states (live or cached) -> side network -> item embedding."""

    def __init__(self, source: nn.Module, side: SideNetwork):
        super().__init__()
        self.source = source
        self.side = side

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        text, image = self.source(ids)
        return self.side(text, image)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        return self.side.param_groups()


def build_side(opts: IISANOptions, models: dict[str, nn.Module], train: TrainConfig) -> tuple[SideNetwork, dict[str, list[int]]]:
    taps = resolve_taps(opts, models)
    vision = models.get("vision")
    side = SideNetwork(models["text"].config.hidden_size, vision.config.hidden_size if vision is not None else None,
                       len(taps["text"]), len(taps["vision"]) if vision is not None else None, opts,
                       train.item_dim, train.architecture)
    return side, taps


# --------------------------------------------------------------------------- the two strategies


@register_method("iisan")
class IISAN(Method):
    description = "IISAN: side network over frozen encoders' tapped CLS states (encoders run every step)."
    paper_train = {"batch_size": 64, "lr_head": 2e-4, "lr_peft": 1e-4}
    Options = IISANOptions

    def build(self, ctx: BuildContext) -> ItemTower:
        models = encoders(ctx.backbones, ctx.data)
        freeze(*models.values())
        side, taps = build_side(self.opts, models, ctx.cfg.train)
        frozen_in_compute_dtype(models, ctx.cfg.train.precision)
        return IISANTower(BackboneTaps(models, ItemInputs(ctx.data), taps), side)


@register_method("iisan-cached")
class IISANCached(Method):
    description = "IISAN trained from a cache of the tapped CLS states (encoders run once, at cache build)."
    paper_train = {"batch_size": 64, "lr_head": 2e-4, "lr_peft": 1e-4}
    # a step is ~3 ms of GPU work behind ~1,000 kernel launches: CUDA graphs (torch.compile's
    # cudagraph trees, one graph per bucketed step shape, all captured before the clock)
    auto_compile = "reduce-overhead"
    Options = IISANCachedOptions

    def __init__(self, options):
        super().__init__(options)
        self.cache_info = None

    def build(self, ctx: BuildContext) -> ItemTower:
        from .iisan_cache import ensure_cache

        models = encoders(ctx.backbones, ctx.data)
        freeze(*models.values())
        side, taps = build_side(self.opts, models, ctx.cfg.train)  # before the cache: same init as iisan
        frozen_in_compute_dtype(models, ctx.cfg.train.precision)  # the cache holds what live iisan computes
        if is_meta(models["text"]):  # parameter counting on the meta device: no states to cache
            n = ctx.data.n_items + 1
            caches = {k: (torch.empty(n, len(taps[k]), m.config.hidden_size, device="meta"),
                          torch.empty(len(taps[k]), m.config.hidden_size, device="meta")) for k, m in models.items()}
        else:
            source = BackboneTaps(models, ItemInputs(ctx.data), taps)
            caches, self.cache_info = ensure_cache(ctx, source, taps, self.opts)
            del source
            release_backbones(ctx)
        return IISANTower(CachedTaps(caches["text"], caches.get("vision")), side)

    def one_off(self) -> CacheCost | None:
        i = self.cache_info
        if i is None:
            return None
        return CacheCost(status="built" if i.built else "loaded", reason=i.reason, build_s=i.build_s,
                         load_s=i.load_s, batch_size=i.batch_size if i.built else None, path=str(i.path))


def release_backbones(ctx: BuildContext) -> None:
    """The cached strategy never runs the encoders again: move them off the device and drop them."""
    device = ctx.device
    for attr in ("text", "vision"):
        model = getattr(ctx.backbones, attr)
        if model is not None and device.type != "cpu":
            model.to("cpu")
        setattr(ctx.backbones, attr, None)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

