"""The shape every model of the zoo shares: a sequence of blocks plus a classifier head.

Progressive methods address "block t", width methods build a narrower twin whose tensors map onto
a subset of the full model's channels (the leftmost, or FedRolex's rolling window), and depth
methods cut after block k; all of them rely only on what is declared here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from harness.registry import Registry

NormLayer = Callable[[int], nn.Module]


@dataclass(frozen=True)
class BlockInfo:
    """What a block does to its input: channels in and out, and spatial stride."""

    in_channels: int
    out_channels: int
    stride: int


def scaled(channels: int, width: float) -> int:
    """Channels of a width-``width`` twin: ceil, as HeteroFL does, and never below one."""
    return max(1, math.ceil(channels * width - 1e-9))


class ClassifierHead(nn.Module):
    """Global average pooling and a linear classifier."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


Layers = tuple[nn.Module, ...]


def segments(block: nn.Module) -> list[Layers]:
    """The checkpointed pieces of a block: each residual unit (a child holding convolutions of its
    own) closes one, with the plain layers before it, so a ResNet stage recomputes one unit at a
    time; a block of plain layers (VGG, the CNN; a norm wrapper is a plain layer) is one piece."""
    if not isinstance(block, nn.Sequential):
        return [(block,)]
    pieces, current = [], []
    for child in block:
        current.append(child)
        if any(isinstance(m, nn.Conv2d) for m in child.modules()) and not isinstance(child, nn.Conv2d):
            pieces.append(tuple(current))
            current = []
    return pieces + ([tuple(current)] if current else [])


def run_layers(layers: Layers, x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


class StatisticsKept:
    """While a checkpointed piece's forward is recomputed (each time it is: a second backward
    recomputes again): its batch-norm layers normalise as before but leave their running
    statistics as the first forward left them (momentum 0, the batch counter put back), so
    checkpointing changes no number of the training."""

    def __init__(self, layers: Layers) -> None:
        self.layers = layers
        self.momenta: list[tuple[nn.Module, float | None]] = []

    def __enter__(self) -> None:
        norms = [m for layer in self.layers for m in layer.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.training]
        self.momenta = [(m, m.momentum) for m in norms]
        for m in norms:
            m.momentum = 0.0

    def __exit__(self, *exc: object) -> None:
        for m, momentum in self.momenta:
            m.momentum = momentum
            m.num_batches_tracked.sub_(1)


def checkpointed_call(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` keeping only the input of each of its pieces: their activations are recomputed
    in the backward pass (non-reentrant checkpointing). No RNG state is saved: the zoo's blocks
    draw no random numbers."""
    for layers in segments(block):
        x = checkpoint(run_layers, layers, x, use_reentrant=False, preserve_rng_state=False,
                       context_fn=lambda layers=layers: (nullcontext(), StatisticsKept(layers)))
    return x


class BlockModel(nn.Module):
    """``blocks[0] -> ... -> blocks[T-1] -> head``; ``block_info[i]`` describes ``blocks[i]``. The
    first ``checkpointed`` blocks recompute their activations in the backward pass instead of
    keeping them (activation checkpointing; 0: none)."""

    def __init__(
        self, blocks: list[nn.Module], block_info: list[BlockInfo], num_classes: int, width: float
    ) -> None:
        super().__init__()
        if len(blocks) != len(block_info):
            raise ValueError("every block needs its BlockInfo")
        self.blocks = nn.ModuleList(blocks)
        self.block_info = list(block_info)
        self.head = ClassifierHead(block_info[-1].out_channels, num_classes)
        self.num_classes = num_classes
        self.width = width
        self.checkpointed = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = checkpointed_call(block, x) if i < self.checkpointed and torch.is_grad_enabled() else block(x)
        return self.head(x)


@dataclass(frozen=True)
class ModelSpec:
    """Everything a builder needs besides the width: the data's shape and classes."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int


ModelBuilder = Callable[..., BlockModel]
MODELS: Registry[ModelBuilder] = Registry("model")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    return MODELS.register(name)


def build_model(
    spec: ModelSpec, width: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d
) -> BlockModel:
    """Build ``spec.name`` at ``width``; ``norm_layer`` lets width methods swap BatchNorm."""
    if not 0 < width <= 1:
        raise ValueError(f"width must be in (0, 1], got {width}")
    return MODELS[spec.name](
        num_classes=spec.num_classes, in_channels=spec.in_channels, width=width, norm_layer=norm_layer
    )


def input_error(spec: ModelSpec, width: float = 1.0) -> str | None:
    """Why ``spec``'s model cannot take its input (an image too small for its pooling), or None;
    found by a forward pass on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        model = build_model(spec, width).eval()
        try:
            model(torch.zeros(1, spec.in_channels, spec.image_size, spec.image_size))
        except RuntimeError as err:
            return (f"model {spec.name} cannot take {spec.in_channels}x{spec.image_size}x{spec.image_size} "
                    f"inputs: {str(err).splitlines()[0]}")
    return None
