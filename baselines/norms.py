"""Norm layers for width methods: static BatchNorm, optionally behind HeteroFL's scaler.

Sub-models of different widths see different activation statistics, so running statistics cannot
be averaged across them: HeteroFL's static BN (sBN) tracks none, and normalises with the statistics
of the batch at hand (in training and at evaluation). The scaler divides a rate-r sub-model's
activations by r during training, so that they match the full model's scale at inference. Both
keep BatchNorm's parameter names, so every width shares the global model's state_dict keys.
"""

from __future__ import annotations

import functools

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
