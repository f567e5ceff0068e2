"""IISAN (Fu et al., SIGIR 2024): a decoupled side network over the frozen encoders' tapped states.

The backbones are frozen and run without gradients (``output_hidden_states``); of every tapped
hidden state only the pooled vector is kept (the CLS vector for BERT and ViT; the family's pooling,
``benchmark.models.families``, e.g. the last token of a decoder-only LLM). Taps default to the embedding output and every other
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

Asymmetric pairs (IISAN-Versa, GAIR-Lab/IISAN's README: "group layer-dropping and dimension
transformation alignment"; its ``Code_Cached_Asym``): when the encoders differ in depth, each one's
layers are split into the same number of groups and the embeddings and each group's last layer are
tapped (``options.grouped_taps``), so both contribute the same number of steps; 24 + 12 layers give
0, 4, ..., 24 and 0, 2, ..., 12. When they differ in width, the intra branches keep each encoder's own
width and the inter branch runs at the narrower one: at every step the wider modality's tapped state
goes through its own Linear(wide -> narrow) first, as Versa's ``down_project_list`` does. Why a
learned projection per step rather than a fixed one or a shared one: the tapped layers of one encoder
live in different bases (a fixed cut or average would mix them), and it is the authors' choice, so
counts and costs compare with theirs. The cache holds the raw tapped states either way.

``SideNetwork`` is the one implementation both strategies train. ``iisan`` feeds it from the live
backbones (``BackboneTaps``); ``iisan-cached`` from a cache of the same tapped pooled states
(``CachedTaps``, built by ``methods.iisan.cache`` with ``BackboneTaps`` itself). The side network
is built before the cache, from the same random state, so the two start from identical weights.
The frozen backbones always run in eval mode (no dropout), so the live and cached states agree.
"""

from methods._common import encoder_layers

from .options import IISANCachedOptions, IISANOptions, default_taps, grouped_taps, options_key, resolve_taps
from .side import GATE_TEMPERATURE, SAN, Branch, SideNetwork, build_side
from .strategies import IISAN, IISANCached, IISANTower, release_backbones
from .taps import BackboneTaps, CachedTaps, TapCLS

__all__ = ["GATE_TEMPERATURE", "SAN", "BackboneTaps", "Branch", "CachedTaps", "IISAN", "IISANCached",
           "IISANCachedOptions", "IISANOptions", "IISANTower", "SideNetwork", "TapCLS", "build_side",
           "default_taps", "grouped_taps", "encoder_layers", "options_key", "release_backbones", "resolve_taps"]
