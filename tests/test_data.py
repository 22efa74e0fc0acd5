"""Data sets load once into uint8 tensors; partitions are seeded and cover the data exactly."""

import numpy as np
import pytest
import torch
from PIL import Image

from harness.config import DataConfig
from harness.data import (
    DATASETS,
    Batches,
    DataError,
    PartitionError,
    load_data,
    partition,
    partition_report,
    random_crop_flip,
)
from harness.data.datasets import from_arrays


@pytest.mark.parametrize(("name", "train", "test", "shape"), [
    ("digits", 1438, 359, (1, 8, 8)),
    ("mnist5k", 4000, 1000, (1, 28, 28)),
    ("synthetic", 1600, 400, (1, 8, 8)),
])
def test_embedded_data_sets(name, train, test, shape):
    data = load_data(DataConfig(name=name))
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (train, *shape)
    assert data.test_x.shape == (test, *shape) and data.num_classes == 10
    # the fixed split is stratified: every class is in both halves
    assert torch.bincount(data.test_y, minlength=10).min() > 0
    assert set(DATASETS.names()) >= {"digits", "mnist5k", "synthetic", "cifar10", "cifar100", "imagefolder"}


def test_validation_fraction_holds_out_training_data():
    full = load_data(DataConfig(name="digits"))
    val = load_data(DataConfig(name="digits", validation_fraction=0.25))
    assert len(val.test_y) == round(0.25 * len(full.train_y))
    assert len(val.train_y) + len(val.test_y) == len(full.train_y)
    assert val.name == "digits[validation]"


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_are_disjoint_complete_and_seeded(scheme):
    labels = load_data(DataConfig(name="digits")).train_y
    cfg = DataConfig(partition=scheme, alpha=0.3)
    parts = partition(labels, 15, cfg, seed=5)
    joined = torch.cat(parts)
    assert len(parts) == 15 and len(joined) == len(labels) and len(joined.unique()) == len(labels)
    assert all(torch.equal(a, b) for a, b in zip(parts, partition(labels, 15, cfg, seed=5)))
    assert any(not torch.equal(a, b) for a, b in zip(parts, partition(labels, 15, cfg, seed=6)))
    assert min(len(p) for p in parts) >= cfg.min_samples


def test_label_skew_grows_as_alpha_shrinks_and_shards_hold_few_labels():
    labels = load_data(DataConfig(name="digits")).train_y

    def mean_labels(cfg):
        report = partition_report(labels, partition(labels, 10, cfg, 0), 10)
        return np.mean([sum(c > 0 for c in r["labels"]) for r in report])

    assert mean_labels(DataConfig(alpha=0.05)) < mean_labels(DataConfig(alpha=100.0))
    assert mean_labels(DataConfig(partition="shards", shards_per_client=2)) <= 3


def test_partition_report_counts():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    report = partition_report(labels, [torch.tensor([0, 3]), torch.tensor([1, 2, 4, 5])], 3)
    assert report == [{"client": 0, "samples": 2, "labels": [1, 0, 1]},
                      {"client": 1, "samples": 4, "labels": [0, 2, 2]}]


def test_impossible_partitions_say_why():
    labels = torch.arange(5) % 2
    with pytest.raises(PartitionError, match="cannot be split"):
        partition(labels, 10, DataConfig(partition="iid"), 0)
    with pytest.raises(PartitionError, match="shards"):
        partition(labels, 4, DataConfig(partition="shards", shards_per_client=2), 0)
    with pytest.raises(PartitionError, match="need 8 samples; the training set has 5"):  # before any draw
        partition(labels, 4, DataConfig(partition="dirichlet", alpha=0.01, min_samples=2), 0)
    with pytest.raises(PartitionError, match="raise alpha"):
        partition(torch.arange(40) % 2, 4, DataConfig(partition="dirichlet", alpha=0.001, min_samples=2), 0)


def test_batches_normalise_shuffle_and_cover():
    data = load_data(DataConfig(name="synthetic"))
    idx = torch.arange(50)
    def samples(seed: int | None) -> torch.Tensor:
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        batches = Batches(data, idx, 16, torch.device("cpu"), generator=generator)
        assert len(batches) == 4
        return torch.cat([x.flatten(1) for x, _ in batches])

    shuffled, given = samples(0), samples(None)  # without a generator: the order given
    assert torch.equal(shuffled, samples(0)) and not torch.equal(shuffled, given)
    same = (shuffled[:, None] == given[None]).all(-1)  # each epoch holds every sample once
    assert same.sum(0).eq(1).all() and same.sum(1).eq(1).all()
    x, _ = next(iter(Batches(data, torch.arange(len(data.train_y)), 2000, torch.device("cpu"))))
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 0.01 and abs(x.std().item() - 1) < 0.01


def test_augmentation_crops_and_flips_within_padding():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crop_flip(x, torch.Generator().manual_seed(1), padding=2)
    assert out.shape == x.shape
    for i in range(2):  # each output is a shifted (and maybe flipped) window of the padded input
        padded = torch.nn.functional.pad(x[i], (2,) * 4)
        windows = [padded[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(out[i], w) or torch.equal(out[i], w.flip(2)) for w in windows)


@pytest.mark.parametrize("side, padding", [(4, 1), (8, 1), (16, 2), (32, 4)])
def test_batches_pad_by_an_eighth_of_the_side(monkeypatch, side, padding):
    """CIFAR's 4 pixels of 32 at any size (at least 1): not half the side of a 16x16 image."""
    paddings = []

    def recording(x, g, padding):
        paddings.append(padding)
        return x

    monkeypatch.setattr("harness.data.batches.random_crop_flip", recording)
    images = np.zeros((40, 3, side, side), np.uint8)
    data = from_arrays("blank", images, np.arange(40) % 2, 0.2, 2)
    list(Batches(data, torch.arange(32), 16, torch.device("cpu"), augment=True))
    assert paddings == [padding, padding]


def test_cifar_without_root_or_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"data\.root is empty"):
        load_data(DataConfig(name="cifar10"))
    with pytest.raises(DataError, match=r"data\.download = true"):
        load_data(DataConfig(name="cifar10", root=str(tmp_path)))
    with pytest.raises(DataError, match="imagefolder"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path)))


def write_folder(root, sizes=(6, 6)):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (*sizes, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")


def test_imagefolder_decodes_once_into_a_cache(tmp_path, monkeypatch):
    write_folder(tmp_path)
    cfg = DataConfig(name="imagefolder", root=str(tmp_path))
    data = load_data(cfg)
    assert data.train_x.shape == (6, 3, 6, 6) and data.num_classes == 2
    assert data.train_y.tolist() == [0, 0, 0, 1, 1, 1]
    original = Image.open(tmp_path / "train" / "dog" / "1.png")
    assert torch.equal(data.train_x[4], torch.from_numpy(np.array(original)).permute(2, 0, 1))
    caches = list((tmp_path / ".harness-cache").glob("*.pt"))
    assert len(caches) == 1
    import harness.data.datasets as datasets

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(datasets, "_decode_folder", no_decoding)  # a second load reads the cache
    assert torch.equal(load_data(cfg).train_x, data.train_x)


def test_imagefolder_mixed_sizes_need_image_size(tmp_path):
    write_folder(tmp_path)
    Image.new("RGB", (9, 9)).save(tmp_path / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match="image_size"):
        load_data(DataConfig(name="imagefolder", root=str(tmp_path)))
    data = load_data(DataConfig(name="imagefolder", root=str(tmp_path), image_size=4))
    assert data.train_x.shape[-2:] == (4, 4)


@pytest.mark.slow
def test_cifar10_jpeg_copy_loads_as_imagefolder(cifar_root):
    data = load_data(DataConfig(name="imagefolder", root=str(cifar_root)))
    assert data.train_x.shape == (50_000, 3, 32, 32) and data.test_x.shape == (10_000, 3, 32, 32)
    assert torch.bincount(data.train_y).tolist() == [5000] * 10
