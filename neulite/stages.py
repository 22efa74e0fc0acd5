"""The stage-t model of progressive training (NEULITE.md sections 1-2).

Stage t holds blocks 1..t of the global model and an output module standing in for blocks t+1..T;
later blocks are never built into it, so a client holds only what it trains or runs. Frozen blocks
run under ``torch.no_grad()`` (no saved activations, no gradients, no optimizer state): that is
where the memory goes down. With the harmonizer's overlap, the tail of block t-1 stays trainable
and only that tail runs with autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from harness.models.base import BlockInfo, BlockModel, ClassifierHead, run_layers
from neulite.harmonizer import overlap_modules


def projection_head(d: int) -> nn.Sequential:
    """The mentor's label-term projection: d -> 4d -> 2d -> d, linear layers without activation."""
    return nn.Sequential(nn.Linear(d, 4 * d), nn.Linear(4 * d, 2 * d), nn.Linear(2 * d, d))


class OutputModule(nn.Module):
    """One strided 3x3 convolution per missing block (no BN, no activation), then the classifier.

    The convolutions are built as the release builds its output modules: Kaiming-normal weights
    (``fan_out``, ReLU gain) and no bias. ``bias = True`` adds a zero-initialised bias. ``proj`` is
    the projection head, present only when the mentor's label term is on."""

    def __init__(self, missing: list[BlockInfo], head: ClassifierHead, proj: nn.Module | None,
                 bias: bool = False) -> None:
        super().__init__()
        self.convs = nn.Sequential(*(output_conv(b, bias) for b in missing))
        self.head = head
        self.proj = proj


def output_conv(block: BlockInfo, bias: bool) -> nn.Conv2d:
    """The 3x3 convolution standing in for one missing block, initialised as the release's."""
    conv = nn.Conv2d(block.in_channels, block.out_channels, 3, stride=block.stride, padding=1, bias=bias)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def _children(block: nn.Module) -> list[nn.Module]:
    return list(block) if isinstance(block, nn.Sequential) else [block]


class StageModel(nn.Module):
    """``blocks[0..t-1] -> out``; stage T keeps the model's own head (it is the full model)."""

    def __init__(self, model: BlockModel, stage: int, overlap: int = 0, projection: bool = False,
                 frozen_bn: str = "train", output_bias: bool = False) -> None:
        super().__init__()
        if not 1 <= stage <= model.num_blocks:
            raise ValueError(f"stage must be in 1..{model.num_blocks}, got {stage}")
        self.stage, self.frozen_bn = stage, frozen_bn
        self.blocks = nn.ModuleList(model.blocks[:stage])
        width = model.block_info[-1].out_channels
        head = model.head if stage == model.num_blocks else ClassifierHead(width, model.num_classes)
        proj = projection_head(width) if projection else None
        self.out = OutputModule(model.block_info[stage:], head, proj, output_bias)
        for p in self.blocks[: stage - 1].parameters():
            p.requires_grad_(False)
        # Blocks 1..t as two paths: ``_frozen_path`` runs without autograd, ``_live_path`` with it.
        prefix = list(self.blocks[: stage - 1])
        live: list[nn.Module] = []
        tail = overlap_modules(prefix[-1], overlap) if prefix else []
        if tail:
            for module in tail:
                module.requires_grad_(True)
            children = _children(prefix.pop())
            split = min(i for i, child in enumerate(children)
                        if any(m is t for m in child.modules() for t in tail))
            prefix, live = prefix + children[:split], children[split:]
        self._frozen_path, self._live_path = prefix, [*live, self.blocks[stage - 1]]

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Blocks 1..t: the frozen prefix without autograd, then the trainable rest."""
        with torch.no_grad():
            x = run_layers(self._frozen_path, x)
        return run_layers(self._live_path, x)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last convolution's feature map (``Z_t``) and its pooled vector (``z_t``)."""
        z = self.out.convs(self.trunk(x))
        return z, self.out.head.features(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out.head.fc(self.features(x)[1])

    def train(self, mode: bool = True) -> StageModel:
        """With ``frozen_bn = "eval"`` frozen norm layers stay in eval mode: a frozen block then
        computes the same function in training as in evaluation, and its statistics do not drift.
        With ``"train"`` (the release's) they normalise with batch statistics and update their own."""
        super().train(mode)
        if self.frozen_bn == "train":
            return self
        for module in self.blocks.modules():
            own = list(module.parameters(recurse=False))
            has_stats = any(True for _ in module.buffers(recurse=False))
            if own and has_stats and not any(p.requires_grad for p in own):
                module.eval()
        return self
