"""Backbones: presets, local folders and hub ids, pretrained vs random init, offline safety, tokenizers."""

import socket

import pytest
import torch

from benchmark.config import BackboneConfig, DataConfig
from benchmark.models.backbones import (bert_tokenizer, load_backbones, load_tokenizer, minilm_dir, offline,
                                        text_source, weights_hash)
from core.errors import BenchError

TEXT_ONLY = DataConfig(images="none")
IMAGES = DataConfig(images="synthetic", image_size=32)


@pytest.fixture
def no_network(monkeypatch, tmp_path):
    """HF_HUB_OFFLINE set, an empty hub cache, and any connection attempt fails the test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    yield attempts
    assert not attempts


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_tiny_is_random_init_text_and_vision():
    b = load_backbones(BackboneConfig(preset="tiny"), IMAGES)
    assert b.info["text_init"] == b.info["vision_init"] == b.info["init"] == "random"
    assert b.text.config.hidden_size == 64 and b.vision.config.hidden_size == 64
    assert b.vision.config.image_size == 32 and b.info["text_source"] == "built-in config"


def test_tiny_has_no_pretrained_weights():
    with pytest.raises(BenchError, match="'tiny' preset has no pretrained text weights.*init = \"random\""):
        load_backbones(BackboneConfig(preset="tiny", init="pretrained"), IMAGES)


def test_minilm_pretrained_loads_the_packaged_weights_with_a_vit_of_its_shape(no_network):
    from safetensors.torch import load_file

    b = load_backbones(BackboneConfig(preset="minilm", init="pretrained"), IMAGES)
    state = load_file(str(minilm_dir() / "model.safetensors"))
    key = next(k for k in state if k.endswith("word_embeddings.weight"))
    assert torch.equal(state[key], b.text.embeddings.word_embeddings.weight)
    assert (b.vision.config.hidden_size, b.vision.config.num_hidden_layers) == (384, 6)
    assert b.info["text_init"] == "pretrained" and b.info["vision_init"] == "random"
    assert b.info["init"] == "text pretrained, vision random"
    assert text_source(BackboneConfig(preset="minilm", init="pretrained"))[0] == str(minilm_dir())
    # the record names the weights by content: a hash of every loaded tensor, the random ViT has none
    sha = b.info["text_weights_sha256"]
    assert len(sha) == 64 and b.info["vision_weights_sha256"] is None
    assert weights_hash(b.text) == sha
    with torch.no_grad():
        b.text.embeddings.word_embeddings.weight[0, 0] += 1.0
    assert weights_hash(b.text) != sha


def test_auto_init_loads_the_weights_a_preset_names(no_network):
    """init = auto (the default): minilm's packaged MiniLM text weights without any flag, tiny stays
    random, and base asks for its checkpoints (offline: one line saying how to go random)."""
    assert BackboneConfig().init == "auto"
    b = load_backbones(BackboneConfig(preset="minilm"), IMAGES)
    assert b.info["init"] == "text pretrained, vision random" and text_source(BackboneConfig(preset="minilm"))[0] == str(minilm_dir())
    assert load_backbones(BackboneConfig(preset="tiny"), IMAGES).info["init"] == "random"
    with pytest.raises(BenchError) as err:
        load_backbones(BackboneConfig(preset="base"), IMAGES)
    assert 'backbone.init = "random"' in str(err.value) and "\n" not in str(err.value)


def test_text_only_has_no_vision_encoder():
    b = load_backbones(BackboneConfig(preset="minilm", init="random"), TEXT_ONLY)
    assert b.vision is None and b.info["vision"] is None and b.info["vision_init"] is None
    assert b.info["init"] == "random" and b.text.config.num_hidden_layers == 6


def test_base_random_uses_built_in_configs_without_any_download(no_network):
    b = load_backbones(BackboneConfig(preset="base", init="random"), DataConfig(images="synthetic", image_size=32))
    assert b.text.config.hidden_size == 768 and b.text.config.num_hidden_layers == 12
    assert 108e6 < n_params(b.text) < 110e6 and 85e6 < n_params(b.vision) < 87e6
    assert b.info["text"] == "bert-base-uncased" and b.info["vision"] == "google/vit-base-patch16-224"
    assert b.info["text_source"] == b.info["vision_source"] == "built-in config"


def test_hub_id_offline_fails_in_one_line_without_network(no_network):
    assert offline()
    for bcfg, key in ((BackboneConfig(preset="base", init="pretrained"), "backbone.preset = 'base' (text)"),
                      (BackboneConfig(preset="minilm", init="pretrained", vision_model="google/vit-base-patch16-224"),
                       "backbone.vision_model")):
        with pytest.raises(BenchError) as err:
            load_backbones(bcfg, IMAGES)
        msg = str(err.value)
        assert msg.startswith(key) and "\n" not in msg
        assert "HF_HUB_OFFLINE set, nothing downloaded" in msg and "hub" in msg
        assert "give a local folder" in msg and 'backbone.init = "random"' in msg
    with pytest.raises(BenchError, match="tokenizer not available from hub id 'bert-base-uncased'"):
        load_tokenizer(BackboneConfig(preset="base", init="pretrained"))


def test_unknown_hub_id_for_random_init_needs_a_config(no_network):
    with pytest.raises(BenchError, match="no built-in config for 'roberta-base'.*give a local folder with a config.json"):
        load_backbones(BackboneConfig(text_model="roberta-base", init="random"), TEXT_ONLY)


def test_local_folders_load_pretrained_or_build_random_from_their_config(tmp_path, no_network):
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    text_dir, vit_dir = tmp_path / "bert", tmp_path / "vit"
    bert = BertModel(BertConfig(vocab_size=30522, hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=96), add_pooling_layer=False)
    bert.save_pretrained(text_dir)
    bert_tokenizer().save_pretrained(text_dir)
    ViTModel(ViTConfig(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                       patch_size=8, image_size=32), add_pooling_layer=False).save_pretrained(vit_dir)

    b = load_backbones(BackboneConfig(text_model=str(text_dir), vision_model=str(vit_dir), init="pretrained"), IMAGES)
    assert torch.equal(b.text.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert b.info["text"] == str(text_dir) and b.info["init"] == "pretrained" and b.vision.config.hidden_size == 48

    r = load_backbones(BackboneConfig(text_model=str(text_dir), vision_model=str(vit_dir), init="random"),
                       DataConfig(images="synthetic", image_size=16))
    assert r.text.config.hidden_size == 48 and r.vision.config.image_size == 16
    assert not torch.equal(r.text.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    assert r.info["text_source"] == f"config of {text_dir}" and r.info["init"] == "random"

    with pytest.raises(BenchError, match="data.image_size=16 but .* expects 32: set data.image_size = 32"):
        load_backbones(BackboneConfig(preset="minilm", vision_model=str(vit_dir), init="pretrained"),
                       DataConfig(images="synthetic", image_size=16))


def test_local_folder_errors_name_the_key(tmp_path):
    with pytest.raises(BenchError, match="backbone.text_model: local folder '/nonexistent/model' not found"):
        load_backbones(BackboneConfig(text_model="/nonexistent/model", init="pretrained"), TEXT_ONLY)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BenchError) as err:
        load_backbones(BackboneConfig(text_model=str(empty), init="pretrained"), TEXT_ONLY)
    assert str(err.value).startswith(f"backbone.text_model: pretrained text weights not available from local folder {empty}")
    with pytest.raises(BenchError, match="'google/vit-base-patch16-224' is a ViT vision model, not a text encoder"):
        load_backbones(BackboneConfig(text_model="google/vit-base-patch16-224"), TEXT_ONLY)


def test_image_size_must_fit_the_patch_size():
    with pytest.raises(BenchError, match="data.image_size=20 is not a multiple of the ViT patch size 8"):
        load_backbones(BackboneConfig(preset="tiny"), DataConfig(images="synthetic", image_size=20))


def test_random_and_pretrained_tokenizers_share_the_uncased_vocabulary():
    title = "Nitrile Gloves, 100-Pack (Large) – Powder-Free"
    rnd = load_tokenizer(BackboneConfig(preset="minilm", init="random"))
    pre = load_tokenizer(BackboneConfig(preset="minilm", init="pretrained"))
    assert rnd(title)["input_ids"] == pre(title)["input_ids"]
    assert rnd.tokenize("MICROSCOPE") == ["microscope"]
    # the whole uncased WordPiece vocabulary (a tokenizer built through the wrong API has 5 tokens)
    assert len(rnd) == len(pre) == bert_tokenizer().vocab_size == 30522


def test_bert_vocab_can_come_from_the_environment(tmp_path, monkeypatch):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "glass", "beaker"]) + "\n")
    monkeypatch.setenv("IISAN_BERT_VOCAB", str(vocab))
    assert len(bert_tokenizer()) == 7
    monkeypatch.setenv("IISAN_BERT_VOCAB", str(tmp_path / "missing.txt"))
    with pytest.raises(BenchError, match="IISAN_BERT_VOCAB=.*missing.txt: file not found"):
        bert_tokenizer()


def test_check_backbones_fails_early_without_building_anything(tmp_path, no_network):
    from transformers import BertConfig

    from benchmark.models.backbones import check_backbones

    check_backbones(BackboneConfig(preset="minilm", init="pretrained"), IMAGES)  # packaged text + random ViT
    check_backbones(BackboneConfig(preset="base", init="random"), IMAGES)
    # an unavailable vision model does not matter for a text-only run
    check_backbones(BackboneConfig(preset="minilm", init="pretrained", vision_model="google/vit-base-patch16-224"), TEXT_ONLY)
    with pytest.raises(BenchError, match="backbone.vision_model: pretrained vision weights not available"):
        check_backbones(BackboneConfig(preset="minilm", init="pretrained", vision_model="google/vit-base-patch16-224"), IMAGES)
    only_config = tmp_path / "cfg-only"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(only_config)
    with pytest.raises(BenchError, match=r"text weights \(config found, no weights file\) not available from local folder"):
        check_backbones(BackboneConfig(text_model=str(only_config), init="pretrained"), TEXT_ONLY)
    check_backbones(BackboneConfig(text_model=str(only_config), init="random"), TEXT_ONLY)
