"""Mini-batches made from in-memory uint8 tensors: index, convert, augment, normalise."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from harness.data.datasets import DataBundle


class Batches:
    """Shuffled mini-batches of one client's samples, as normalised float tensors on ``device``.
    In training, a last batch of a single sample is left out of the epoch (batch norm cannot
    train on one value per channel, which a model's last feature maps can be)."""

    def __init__(self, data: DataBundle, indices: torch.Tensor, batch_size: int, device: torch.device,
                 augment: bool = False, generator: torch.Generator | None = None,
                 train: bool = True) -> None:
        x, y = (data.train_x, data.train_y) if train else (data.test_x, data.test_y)
        self.x, self.y = x[indices], y[indices]
        self.batch_size = batch_size
        self.device = device
        self.augment = augment
        self.generator = generator
        self.mean = torch.tensor(data.mean).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std).view(1, -1, 1, 1)
        self.drop_single = train and len(self.y) > 1

    def __len__(self) -> int:
        return len(epoch_sizes(len(self.y), self.batch_size, self.drop_single))

    @property
    def sizes(self) -> set[int]:
        """The batch sizes an epoch trains: the full one, and a short last one."""
        return set(epoch_sizes(len(self.y), self.batch_size, self.drop_single))

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        order = torch.randperm(n, generator=self.generator) if self.generator is not None else torch.arange(n)
        for chunk in order.split(self.batch_size)[:len(self)]:
            x = self.x[chunk].float().div_(255)
            if self.augment:
                x = random_crop_flip(x, self.generator, padding=max(1, x.shape[-1] // 8))
            x = (x - self.mean) / self.std
            yield x.to(self.device, non_blocking=True), self.y[chunk].to(self.device, non_blocking=True)


def epoch_sizes(samples: int, batch_size: int, drop_single: bool = True) -> list[int]:
    """The batch sizes of an epoch over ``samples`` samples, as ``Batches`` cuts them: a last batch of
    one sample is left out (``drop_single``, in training, unless it is the client's only sample)."""
    full, rest = divmod(samples, batch_size)
    return [batch_size] * full + ([rest] if rest > (1 if drop_single and samples > 1 else 0) else [])


def random_crop_flip(x: torch.Tensor, g: torch.Generator | None, padding: int) -> torch.Tensor:
    """CIFAR augmentation on a batch: pad-and-crop at a random offset, then a random horizontal flip.
    ``Batches`` pads by an eighth of the side, CIFAR's 4 pixels of 32 at any image size."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n, 1, 1, 1), generator=g)
    rows = (dy + torch.arange(h).view(1, 1, h, 1)).expand(n, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (dx + torch.arange(w).view(1, 1, 1, w)).expand(n, c, h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=g) < 0.5
    out[flip] = out[flip].flip(3)
    return out
