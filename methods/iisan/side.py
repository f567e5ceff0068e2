"""The IISAN side network: SAN blocks, gated branches, projection and fusion (see the package doc)."""

from __future__ import annotations

import torch
from torch import nn

from benchmark.config import TrainConfig
from core.errors import BenchError
from methods.base import xavier_projection

from .options import IISANOptions, options_key, resolve_taps

GATE_TEMPERATURE = 0.1


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
        inter_dim = text_dim
        self.align_kind: str | None = None  # the wider modality, projected to the other's width per step
        if has_image and opts.modality in ("intra_inter", "inter"):
            if text_taps != image_taps:
                raise BenchError(f"'{options_key(opts)}': the inter branch needs the same number of taps from both "
                                 f"encoders (text {text_taps}, image {image_taps}); leave taps = [] for grouped taps")
            inter_dim = min(text_dim, image_dim)
            if text_dim != image_dim:  # IISAN-Versa's dimension alignment: one Linear per step, wide -> narrow
                self.align_kind = "text" if text_dim > image_dim else "image"
                wide = max(text_dim, image_dim)
                self.align = nn.ModuleList(nn.Linear(wide, inter_dim) for _ in range(text_taps))
            branches["inter"] = Branch(inter_dim, text_taps, opts.bottleneck, opts.fusion, True, paper)
        self.branches = nn.ModuleDict(branches)
        dims = {"text": text_dim, "image": image_dim, "inter": inter_dim}
        self.proj = nn.ModuleDict({k: nn.Linear(dims[k], item_dim) for k in branches})
        if paper and "image" in self.proj:
            xavier_projection(self.proj["image"])  # the paper reuses the ViT's classifier, xavier-initialised
        self.fuse = nn.Linear(len(branches) * item_dim, item_dim) if len(branches) > 1 else None

    def forward(self, text: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        """text [N, taps, Ht], image [N, taps, Hv] or None -> item embeddings [N, item_dim]."""
        outs = []
        for name, branch in self.branches.items():
            h = branch(text) if name == "text" else branch(image) if name == "image" else branch(*self._aligned(text, image))
            outs.append(self.proj[name](h))
        return outs[0] if self.fuse is None else self.fuse(torch.cat(outs, dim=-1))

    def _aligned(self, text: torch.Tensor, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text and image taps at the inter branch's width (the wider modality projected, step by step)."""
        if self.align_kind is None:
            return text, image
        wide = text if self.align_kind == "text" else image
        narrow = torch.stack([lin(wide[:, i]) for i, lin in enumerate(self.align)], dim=1)
        return (narrow, image) if self.align_kind == "text" else (text, narrow)

    def param_groups(self, rule: str = "side") -> dict[str, list[nn.Parameter]]:
        """Trainable parameters by learning-rate group (``ItemTower.param_groups``).

        ``side``: everything in the branches (SAN blocks, gates, branch outputs) at ``lr_peft``, the
        projections and the fusion at ``lr_head``. ``paper``: the paper's ``run.py``, which sorts
        parameters by substrings of their names (``'cv'``, ``'bert'``, ``'fc'``, ``'adapter'``): its text
        output ``fc_bert`` lands in the text-encoder group (``fine_tune_lr_text``, our ``lr_backbone``),
        the image output ``fc_cv`` and the image gates in the image group (``fine_tune_lr_image``, our
        ``lr_backbone_vision``), the SAN blocks in the adapter groups (``lr_peft``), and the text and
        inter-modal gates, the inter-modal output ``fc_mm``, the projections and the fusion in the rest
        (``lr``, our ``lr_head``)."""
        groups: dict[str, list[nn.Parameter]] = {"backbone": [], "backbone_vision": [], "peft": [], "head": []}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups[(paper_group if rule == "paper" else side_group)(name)].append(p)
        return groups


def side_group(name: str) -> str:
    return "peft" if name.startswith(("branches.", "align.")) else "head"


PAPER_GROUPS = {("text", "out"): "backbone", ("image", "out"): "backbone_vision",
                ("image", "gates"): "backbone_vision"}


def paper_group(name: str) -> str:
    """The paper's group of a side-network parameter (``SideNetwork.param_groups``)."""
    parts = name.split(".")
    if parts[0] != "branches":
        return "head"  # proj.* (title.fc, classifier, fc_mm_down), fuse (com_dense), align (Versa's down_project_list)
    if parts[2] == "blocks":
        return "peft"  # *_adapter_list: adapter_bert_lr / adapter_cv_lr
    return PAPER_GROUPS.get((parts[1], parts[2]), "head")  # fc_bert, fc_cv, side_gate_params_cv; the rest lr


def build_side(opts: IISANOptions, models: dict[str, nn.Module], train: TrainConfig) -> tuple[SideNetwork, dict[str, list[int]]]:
    taps = resolve_taps(opts, models)
    vision = models.get("vision")
    side = SideNetwork(models["text"].config.hidden_size, vision.config.hidden_size if vision is not None else None,
                       len(taps["text"]), len(taps["vision"]) if vision is not None else None, opts,
                       train.item_dim, train.architecture)
    return side, taps
