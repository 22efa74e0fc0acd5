"""The training harmonizer (NEULITE.md section 4): how stages share and co-adapt their blocks.

- Backward: in stage t the last ``overlap`` convolutions and norms of block t-1 stay trainable, so
  block t's gradient also adapts the end of the block it builds on.
- Forward: before stage t trains, its copy of blocks 1..t-1 is refreshed from stage t-1 (the
  progressive inheritance, kept even with the harmonizer off) and, once the full model has been
  trained, its copy of block t from the full model, so each block carries what later stages taught it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from torch import nn


class Staged(Protocol):
    """What the harmonizer needs of a stage model (``neulite.stages.Staged``, which uses this
    module's overlap): its blocks."""

    blocks: nn.ModuleList


def overlap_modules(block: nn.Module, overlap: int) -> list[nn.Module]:
    """The last ``overlap`` convolutions and batch norms of ``block`` in module order (ResNet units
    register their shortcut first, so these are the unit's conv2/bn2)."""
    if overlap <= 0:
        return []
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    return convs[-overlap:] + norms[-overlap:]


def copy_blocks(src: Staged, dst: Staged, indices: Iterable[int]) -> list[str]:
    """Copy ``blocks[i]`` (parameters and buffers) from ``src`` to ``dst``; the keys copied."""
    keys = []
    for i in indices:
        state = src.blocks[i].state_dict()
        dst.blocks[i].load_state_dict(state)
        keys += [f"blocks.{i}.{k}" for k in state]
    return keys


def refresh(stages: list[Staged], stage: int, full_trained: bool, from_full: bool) -> list[str]:
    """Prepare ``stages[stage - 1]`` to train: the state-dict keys it received."""
    target = stages[stage - 1]
    keys = copy_blocks(stages[stage - 2], target, range(stage - 1)) if stage > 1 else []
    if from_full and full_trained and stage < len(stages):
        keys += copy_blocks(stages[-1], target, [stage - 1])
    return keys
