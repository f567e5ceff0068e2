"""Datasets: IISAN TSV preprocessing, the Scientific folder, keyed synthetic images, real images and their cache."""

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark.config import DataConfig, load_config
from benchmark.data import images
from benchmark.data.dataset import keyed_images, load_dataset, make_split, tokenize, tsv_dataset
from core.errors import BenchError

SCIENTIFIC = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "Scientific"


def make_dataset(root: Path, n_items=8, users=None, name="Toy") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{name}_items.tsv").write_text("".join(f"i{i}\tthing number {i}\n" for i in range(1, n_items + 1)))
    users = users or [[f"i{(u + j) % n_items + 1}" for j in range(5)] for u in range(6)]
    (root / f"am_{name}_users.tsv").write_text("".join(f"u{u}\t{' '.join(s)}\n" for u, s in enumerate(users)))
    return root


def save_image(path: Path, colour, size=(40, 30)):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


# --------------------------------------------------------------------------- Scientific


@pytest.mark.skipif(not SCIENTIFIC.is_dir(), reason="../shared/datasets/Scientific not present")
def test_scientific_loads_like_the_paper_and_tokenises():
    from benchmark.models.backbones import bert_tokenizer

    ds = tsv_dataset(SCIENTIFIC, DataConfig(dataset=str(SCIENTIFIC), images="none"))
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (12076, 20314, 81711)
    assert ds.images is None and ds.summary()["images"] == "none"
    tokenize(ds, bert_tokenizer(), 30)
    assert ds.tokens.shape == (20315, 30) and ds.attention_mask[1:].sum(1).min() >= 3  # [CLS] word [SEP]


@pytest.mark.slow  # ranks 12,076 users x 20,314 items under three rules, test split only: 12 s
@pytest.mark.skipif(not SCIENTIFIC.is_dir(), reason="../shared/datasets/Scientific not present")
def test_scientific_popularity_floor_under_each_masking_rule():
    """Test HR@10 / NDCG@10 of popularity on Scientific: 0.0150 / 0.0094 under the paper's rule
    (the paper's code), 0.0383 / 0.0280 with the target exempt, 0.0379 / 0.0257 unmasked; 5.1% of
    test targets repeat a history item."""
    from benchmark.launch.prepare import popularity_metrics, repeat_shares

    ds = tsv_dataset(SCIENTIFIC, DataConfig(dataset=str(SCIENTIFIC), images="none"))
    split = make_split(ds, 10)
    got = {rule: popularity_metrics(split, [10], rule, splits=("test",))["test"]
           for rule in ("all_history", "history_except_target", "none")}
    assert {rule: (round(m["hr@10"], 4), round(m["ndcg@10"], 4)) for rule, m in got.items()} == {
        "all_history": (0.0150, 0.0094), "history_except_target": (0.0383, 0.0280), "none": (0.0379, 0.0257)}
    assert round(repeat_shares(split)["test"], 3) == 0.051


# --------------------------------------------------------------------------- TSV preprocessing


def test_tsv_keeps_last_items_drops_short_users_and_reindexes(tmp_path):
    users = [[f"i{j}" for j in range(1, 16)],  # 15 items: keeps the last 13 (max_seq_len 10 + 3)
             ["i3", "i2"],                      # too short: dropped
             ["i9", "i8", "i7", "i6", "i5"]]
    root = make_dataset(tmp_path / "d", n_items=20, users=users)
    ds = tsv_dataset(root, DataConfig(dataset=str(root), images="none"))
    assert ds.n_users == 2 and ds.item_keys == [f"i{j}" for j in range(3, 16)]  # items file order, i1, i2 unused
    assert ds.titles[0] == "thing number 3"
    assert [ds.item_keys[i - 1] for i in ds.sequences[0]] == users[0][2:]
    assert ds.popularity()[ds.item_keys.index("i9") + 1] == 2  # training part only: last two excluded


def test_lines_split_on_newline_only_and_tolerate_bom_and_crlf(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    (root / "X_items.tsv").write_bytes("\ufeffa\tfirst\u2028title\r\nb\tsecond\r\nc\tthird\x85x\r\n".encode())
    (root / "X_users.tsv").write_text("u1\ta b c a b\nu2\ta\tb\n")
    with pytest.raises(BenchError, match=r"X_users.tsv:2: expected 2 tab-separated columns"):
        tsv_dataset(root, DataConfig(dataset=str(root), images="none"))
    (root / "X_users.tsv").write_text("u1\ta b c a b\n")
    ds = tsv_dataset(root, DataConfig(dataset=str(root), images="none"))
    assert ds.item_keys == ["a", "b", "c"] and ds.titles[0] == "first\u2028title"


def test_summary_flags_images_and_carries_data_timings(tmp_path):
    root = make_dataset(tmp_path / "d")
    ds = tsv_dataset(root, DataConfig(dataset=str(root), images="synthetic", image_size=16))
    s = ds.summary()
    assert s["images"] == "synthetic" and "images_s" in s["timings"]
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (9, 3, 16, 16) and not ds.images[0].any()


def test_keyed_synthetic_images_are_seeded_by_item_id():
    a = keyed_images(["x", "y", "z"], 16)
    b = keyed_images(["z", "x"], 16)
    assert torch.equal(a[1], b[2]) and torch.equal(a[3], b[1])  # same id, same image, any order
    assert not torch.equal(a[1], a[2])
    assert torch.equal(a, keyed_images(["x", "y", "z"], 16))


# --------------------------------------------------------------------------- real images


def real_cfg(root, **kw):
    return DataConfig(dataset=str(root), images="real", image_size=16, **kw)


def test_real_images_are_resized_uint8_in_item_order(tmp_path):
    root = make_dataset(tmp_path / "d", n_items=4, users=[["i1", "i2", "i3", "i4", "i1"]])
    colours = {"i1": (255, 0, 0), "i2": (0, 255, 0), "i3": (0, 0, 255), "i4": (10, 20, 30)}
    for key, c in colours.items():
        save_image(root / "images" / f"{key}.{'png' if key == 'i2' else 'jpg'}", c, size=(50 + 7 * int(key[1]), 33))
    ds = tsv_dataset(root, real_cfg(root))
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (5, 3, 16, 16)
    assert not ds.images[0].any()  # padding row
    for idx, key in enumerate(ds.item_keys, 1):
        mean = ds.images[idx].float().mean(dim=(1, 2))
        assert torch.allclose(mean, torch.tensor(colours[key], dtype=torch.float), atol=6), key
    assert ds.summary()["images"] == "real" and ds.image_source["cache"] == "built"


def test_real_images_are_decoded_once_then_cached(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", n_items=4, users=[["i1", "i2", "i3", "i4", "i1"]])
    for i in range(1, 5):
        save_image(root / "images" / f"i{i}.png", (40 * i, 0, 0))
    first = tsv_dataset(root, real_cfg(root)).images.clone()
    cache = list((root / ".iisan-cache").glob("images-16-*.npy"))
    assert len(cache) == 1 and np.load(cache[0]).shape == (5, 3, 16, 16)
    assert not list((root / ".iisan-cache").glob("*.tmp"))

    def no_decode(*_a, **_k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images, "decode_image", no_decode)
    again = tsv_dataset(root, real_cfg(root))
    assert torch.equal(again.images, first) and again.image_source["cache"] == "hit"
    monkeypatch.undo()
    save_image(root / "images" / "i2.png", (0, 0, 200), size=(41, 30))  # a changed image invalidates the cache
    changed = tsv_dataset(root, real_cfg(root))
    assert changed.image_source["cache"] == "built" and not torch.equal(changed.images, first)


def test_cache_goes_to_the_user_cache_when_the_dataset_is_read_only(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", n_items=4, users=[["i1", "i2", "i3", "i4", "i1"]])
    for i in range(1, 5):
        save_image(root / "images" / f"i{i}.png", (40 * i, 0, 0))
    user = tmp_path / "usercache"
    monkeypatch.setenv("IISAN_BENCH_CACHE", str(user))
    real_writable = images._writable_dir
    monkeypatch.setattr(images, "_writable_dir", lambda p: not str(p).startswith(str(root)) and real_writable(p))
    ds = tsv_dataset(root, real_cfg(root))
    assert not (root / ".iisan-cache").exists()
    assert Path(ds.image_source["cache_path"]).is_relative_to(user) and len(list(user.rglob("*.npy"))) == 1
    assert tsv_dataset(root, real_cfg(root)).image_source["cache"] == "hit"


def test_a_failed_cache_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    root = make_dataset(tmp_path / "d", n_items=4, users=[["i1", "i2", "i3", "i4", "i1"]])
    for i in range(1, 5):
        save_image(root / "images" / f"i{i}.png", (40 * i, 0, 0))
    monkeypatch.setenv("IISAN_BENCH_CACHE", str(tmp_path / "usercache"))

    def broken_save(fh, arr, allow_pickle=False):
        fh.write(b"\x93NUMPY partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(images.np, "save", broken_save)
    ds = tsv_dataset(root, real_cfg(root))  # the run still gets its images
    assert ds.images.shape == (5, 3, 16, 16) and ds.image_source["cache_path"] is None
    assert not [p for p in tmp_path.rglob("*") if p.suffix in (".npy", ".tmp")]


def test_real_images_train_end_to_end_and_are_recorded(tmp_path):
    from benchmark.launch.sweep import run_benchmark

    root = make_dataset(tmp_path / "d", n_items=12, users=[[f"i{(u * 5 + j) % 12 + 1}" for j in range(6)] for u in range(12)])
    for i in range(1, 13):
        save_image(root / "images" / f"i{i}.jpg", (20 * i, 255 - 20 * i, 90))
    cfg = load_config(None, {"data": {"dataset": str(root), "images": "real", "image_size": 16},
                             "run": {"methods": ["fft"], "epochs": 1, "isolate": False, "out": str(tmp_path / "out")},
                             "train": {"max_steps_per_epoch": 1, "batch_size": 8}, "eval": {"ks": [5]}})
    rec = json.loads(run_benchmark(cfg, progress=False, echo=lambda *_: None).read_text().splitlines()[0])
    assert rec["status"] == "ok", rec.get("error")
    assert rec["data"]["images"] == "real" and rec["data"]["image_source"]["source"] == "images/"
    assert rec["backbone"]["vision"] == "tiny-vit" and rec["backbone"]["vision_init"] == "random"
    # the machine check covered the run from its start to its end (run.quiet_check)
    cond = rec["conditions"]
    assert [s["when"] for s in cond["snapshots"]] == ["start", "end"] and cond["span_s"] > 0
    assert cond["others_cores"] >= 0
    assert isinstance(cond["busy"], bool) and cond["threads"]["torch_intra_op"] >= 1
    # reproducibility metadata: the data by content, the build, the commit
    from benchmark.data.fingerprint import content_hash

    data = load_dataset(cfg.data, cfg.run.seed)
    assert rec["data"]["content_sha256"] == content_hash(data) and len(content_hash(data)) == 64
    data.titles[0] += " changed"
    assert content_hash(data) != rec["data"]["content_sha256"]
    env = rec["env"]
    assert len(env["torch_config_sha"]) == 16 and env["packages"]["numpy"] and env["cpu_model"]
    assert env["git_dirty"] in (True, False, None) and (env["git_commit"] is None or len(env["git_commit"]) == 40)


# --------------------------------------------------------------------------- the paper's LMDB (pickled) store


def test_lmdb_is_refused_without_trust_pickle(tmp_path):
    root = make_dataset(tmp_path / "d")
    (root / "Toy_image.lmdb").mkdir()
    (root / "Toy_image.lmdb" / "data.mdb").write_bytes(b"")
    with pytest.raises(BenchError) as err:
        tsv_dataset(root, real_cfg(root))
    msg = str(err.value)
    assert "pickled Python objects" in msg and "--trust-pickle" in msg and "\n" not in msg


def test_lmdb_with_trust_pickle_needs_the_lmdb_package(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "lmdb", None)  # as if not installed
    root = make_dataset(tmp_path / "d")
    (root / "Toy_image.lmdb").mkdir()
    with pytest.raises(BenchError, match=r"needs the 'lmdb' package \(pip install lmdb\)"):
        tsv_dataset(root, real_cfg(root, trust_pickle=True))


def test_lmdb_records_unpickle_only_the_image_class(monkeypatch):
    class LMDB_Image:  # the paper's record class, as pickled by its __main__ script
        def __init__(self, image, id):
            self.channels = image.shape[2]
            self.size = image.shape[:2]
            self.image = image.tobytes()
            self.id = id

    LMDB_Image.__module__, LMDB_Image.__qualname__ = "__main__", "LMDB_Image"
    monkeypatch.setattr(sys.modules["__main__"], "LMDB_Image", LMDB_Image, raising=False)
    pixels = np.zeros((20, 10, 3), dtype=np.uint8)
    pixels[..., 1] = 200
    raw = pickle.dumps(LMDB_Image(pixels, "i1"))
    out = images.decode_lmdb_record(raw, 8, "store[i1]")
    assert out.shape == (3, 8, 8) and out.dtype == np.uint8 and (out[1] == 200).all() and not out[0].any()

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo should-never-run",))

    with pytest.raises(BenchError, match=r"store\[bad\]: not a readable LMDB_Image record .*refusing to load"):
        images.decode_lmdb_record(pickle.dumps(Evil()), 8, "store[bad]")


def test_real_images_need_a_dataset_folder():
    with pytest.raises(BenchError, match="needs a dataset folder with images"):
        load_dataset(DataConfig(images="real"), 0)


@pytest.mark.parametrize("name", ["scientific-cpu.toml", "scientific-cpu-iisan-cached.toml"])
def test_scientific_cpu_configs_load_and_name_real_methods(name):
    from benchmark.launch.recipe import check_methods, method_names

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / name)
    names = method_names(cfg)
    check_methods(cfg, names)
    assert "iisan-cached" in names and cfg.data.images == "none"
    assert cfg.backbone.preset == "minilm" and cfg.backbone.init == "pretrained"
    assert cfg.data.dataset == "../shared/datasets/Scientific"
