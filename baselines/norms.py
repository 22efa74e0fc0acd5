"""Norm layers for width methods: HeteroFL's static BatchNorm behind its scaler, FjORD's ordered one.

Sub-models of different widths see different activation statistics, so running statistics cannot
be averaged across them. HeteroFL's static BN (sBN) tracks none and normalises with the statistics
of the batch at hand (its server gathers statistics before evaluating); the scaler divides a rate-r
sub-model's activations by r during training, so that they match the full model's scale at
inference. FjORD keeps one set of running statistics per width instead. Every width shares the
global model's parameter names, so sub-models map onto its state_dict.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

import torch
from torch import nn

from harness.models.base import NormLayer


class ScaledStaticBatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d(x / rate)`` in training (the scaler precedes the norm, as in HeteroFL)."""

    def __init__(self, channels: int, rate: float = 1.0) -> None:
        super().__init__(channels, track_running_stats=False)
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.rate != 1.0:
            x = x / self.rate
        return super().forward(x)


def static_norm(rate: float = 1.0) -> NormLayer:
    """The norm layer of a rate-``rate`` sub-model (rate 1: static BN, no scaling)."""
    return functools.partial(ScaledStaticBatchNorm, rate=rate)


class OrderedBatchNorm2d(nn.Module):
    """FjORD's batch norm: running statistics of their own for every width (told apart by channel
    count), one affine transform whose leading entries each narrower width shares. A width-p
    forward (``x`` with p's channels) normalises with p's statistics, in training and evaluation."""

    def __init__(self, channels: int, widths: Iterable[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.stats = nn.ModuleDict({str(c): nn.BatchNorm2d(c, affine=False) for c in sorted(set(widths))})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        return self.stats[str(c)](x) * self.weight[:c].view(1, c, 1, 1) + self.bias[:c].view(1, c, 1, 1)
