"""Data loaders on tiny inputs written in the real on-disk formats; the offline error paths."""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from accelvit.data import DataConfig, load_data, load_image, stratified_split
from accelvit.errors import ConfigError, DataError, InputError


def _labels(loader) -> list[int]:
    return [int(y) for _, ys in loader for y in ys]


def test_digits_split_is_stratified_seeded_and_disjoint():
    b = load_data(DataConfig(dataset="digits", img_size=16, batch_size=32, augment=False))
    assert b.class_names == [str(i) for i in range(10)]
    assert b.input_size == (3, 16, 16)
    n = b.split["train"] + b.split["val"] + b.split["test"]
    assert n == 1797
    assert b.split["test"] == pytest.approx(0.2 * 1797, abs=10)
    test_counts = Counter(_labels(b.test))
    assert set(test_counts) == set(range(10))
    assert max(test_counts.values()) - min(test_counts.values()) <= 2  # stratified
    x, y = next(iter(b.train))
    assert x.shape == (32, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    assert torch.equal(x[:, 0], x[:, 1])  # grey replicated to RGB
    train_idx = set(b.train.dataset.indices)
    assert not train_idx & set(b.val.dataset.indices) and not train_idx & set(b.test.dataset.indices)
    b2 = load_data(DataConfig(dataset="digits", img_size=16, batch_size=32, augment=False))
    assert b2.test.dataset.indices == b.test.dataset.indices
    b3 = load_data(DataConfig(dataset="digits", img_size=16, batch_size=32, augment=False, seed=1))
    assert b3.test.dataset.indices != b.test.dataset.indices


def test_eval_transform_is_deterministic_and_augment_switchable():
    b = load_data(DataConfig(dataset="digits", img_size=16, batch_size=8, augment=True))
    assert torch.equal(b.test.dataset[0][0], b.test.dataset[0][0])
    torch.manual_seed(0)
    views = [b.train.dataset[0][0] for _ in range(8)]
    assert any(not torch.equal(views[0], v) for v in views[1:])  # random crops differ
    b_off = load_data(DataConfig(dataset="digits", img_size=16, batch_size=8, augment=False))
    assert torch.equal(b_off.train.dataset[0][0], b_off.train.dataset[0][0])


def test_subset_caps_sizes_and_keeps_classes():
    b = load_data(DataConfig(dataset="digits", img_size=16, subset=200, eval_subset=50))
    assert b.split["train"] == 200 and b.split["val"] == 50 and b.split["test"] == 50
    assert len(set(_labels(b.train))) == 10


def test_stratified_split_fractions():
    targets = [0] * 50 + [1] * 30 + [2] * 20
    a, b, rest = stratified_split(targets, [0.2, 0.1], seed=3)
    assert len(a) == 20 and len(b) == 10 and len(rest) == 70
    assert Counter(np.asarray(targets)[a]) == {0: 10, 1: 6, 2: 4}
    assert sorted(np.concatenate([a, b, rest]).tolist()) == list(range(100))


@pytest.mark.parametrize("field,value", [("dataset", "mnist"), ("img_size", 4), ("batch_size", 0),
                                         ("val_fraction", 1.5), ("subset", 0)])
def test_bad_config_names_the_field(field, value):
    with pytest.raises(ConfigError) as e:
        load_data(DataConfig(**{field: value}))
    assert e.value.field == field


# ----------------------------------------------------------------------------- CIFAR-10

def _write_cifar(root: Path, per_batch: int = 20, test: int = 30) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def batch(n: int) -> dict:
        labels = [i % 10 for i in range(n)]
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        return {"data": data, "labels": labels}

    for i in range(1, 6):
        with open(folder / f"data_batch_{i}", "wb") as f:
            pickle.dump(batch(per_batch), f)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch(test), f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names}, f)


def test_cifar10_reads_the_real_format(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR10

    _write_cifar(tmp_path)
    # The files are ours, not the official archive, so their MD5 sums differ; in real use
    # torchvision's check is what keeps anything but the official (pickled) files out.
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    b = load_data(DataConfig(dataset="cifar10", root=str(tmp_path), img_size=32, batch_size=16, val_fraction=0.2))
    assert b.class_names[0] == "airplane" and len(b.class_names) == 10
    assert b.split["train"] == 80 and b.split["val"] == 20 and b.split["test"] == 30
    x, y = next(iter(b.test))
    assert x.shape == (30, 3, 32, 32)
    assert _labels(b.test) == [i % 10 for i in range(30)]  # official test split, in order


def test_cifar10_offline_error_names_the_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path / "nowhere")))
    msg = str(e.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in msg and "download" in msg


def test_cifar10_corrupt_files_error(tmp_path):
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"junk")
    with pytest.raises(DataError, match="missing files or corrupted"):
        load_data(DataConfig(dataset="cifar10", root=str(tmp_path)))


# ----------------------------------------------------------------------------- Caltech-101

def _write_caltech(root: Path) -> None:
    cats = root / "caltech101" / "101_ObjectCategories"
    rng = np.random.default_rng(0)
    for cls, n, mode in [("accordion", 10, "RGB"), ("brain", 10, "L"), ("camera", 5, "RGB"),
                         ("BACKGROUND_Google", 4, "RGB")]:
        (cats / cls).mkdir(parents=True)
        for i in range(1, n + 1):
            shape = (40, 60, 3) if mode == "RGB" else (50, 30)
            Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8), mode=mode).save(
                cats / cls / f"image_{i:04d}.jpg")


def test_caltech101_excludes_background_and_converts_grey(tmp_path):
    _write_caltech(tmp_path)
    b = load_data(DataConfig(dataset="caltech101", root=str(tmp_path), img_size=24, batch_size=4,
                             val_fraction=0.2, test_fraction=0.2))
    assert b.class_names == ["accordion", "brain", "camera"]
    assert b.split["train"] + b.split["val"] + b.split["test"] == 25
    assert b.split["test_fraction"] == 0.2 and b.split["val_fraction"] == 0.2
    labels = _labels(b.test)
    assert set(labels) == {0, 1, 2}
    xs = [x for x, _ in b.val]
    assert all(x.shape[1:] == (3, 24, 24) for x in xs)  # grey "brain" images became RGB


def test_caltech101_missing_error_names_the_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(DataConfig(dataset="caltech101", root=str(tmp_path)))
    assert str(tmp_path / "caltech101" / "101_ObjectCategories") in str(e.value)
    assert not (tmp_path / "caltech101").exists()  # nothing created on failure


# ----------------------------------------------------------------------------- folder

def _write_folder(root: Path, classes=("cat", "dog"), n=6) -> None:
    rng = np.random.default_rng(1)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(root / c / f"{i}.png")


def test_folder_with_train_and_test_subfolders(tmp_path):
    _write_folder(tmp_path / "train", n=10)
    _write_folder(tmp_path / "test", n=3)
    b = load_data(DataConfig(dataset="folder", root=str(tmp_path), img_size=16, batch_size=4, val_fraction=0.2))
    assert b.class_names == ["cat", "dog"]
    assert b.split["test"] == 6 and b.split["val"] == 4 and b.split["train"] == 16
    assert "test/" in b.split["method"]


def test_folder_without_subfolders_is_split(tmp_path):
    _write_folder(tmp_path, n=10)
    b = load_data(DataConfig(dataset="folder", root=str(tmp_path), img_size=16, batch_size=4))
    assert b.split["train"] + b.split["val"] + b.split["test"] == 20
    assert b.split["method"] == "stratified"


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(DataConfig(dataset="folder", root=str(tmp_path / "missing")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not an image folder tree"):
        load_data(DataConfig(dataset="folder", root=str(tmp_path / "empty")))
    with pytest.raises(ConfigError, match="root"):
        load_data(DataConfig(dataset="folder"))


def test_load_image_accepts_png_and_rejects_text(tmp_path):
    import io

    buf = io.BytesIO()
    Image.fromarray(np.zeros((5, 7), dtype=np.uint8)).save(buf, format="PNG")
    img = load_image(buf.getvalue())
    assert img.mode == "RGB" and img.size == (7, 5)
    with pytest.raises(InputError, match="not an image"):
        load_image(b"hello, I am text")
