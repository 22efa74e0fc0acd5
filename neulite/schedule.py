"""Which stage a round trains (NEULITE.md section 5).

- ``Cyclic``: round r trains stage ((r-1) mod T) + 1, so every stage co-evolves (the release's).
- ``Sequential``: stage t runs for R_t rounds, then the next; optionally it moves on early once the
  trained block's effective movement over the last k aggregations falls below a threshold.
The stage of a round is fixed when it is first asked for, so every device of a round agrees.
"""

from __future__ import annotations

from collections import deque
from itertools import pairwise
from typing import Any

import torch
from torch import nn


class Cyclic:
    def __init__(self, num_stages: int) -> None:
        self.num_stages = num_stages

    def stage(self, rnd: int) -> int:
        return (rnd - 1) % self.num_stages + 1

    def observe(self, block: nn.Module) -> None:
        """Nothing to learn from an aggregation: the cycle is fixed."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Stateless."""


def proportional_rounds(total: int, sizes: list[int]) -> list[int]:
    """``total`` rounds split in proportion to ``sizes`` (block parameter counts), at least 1 each."""
    whole = sum(sizes)
    return [max(1, round(total * s / whole)) for s in sizes]


def effective_movement(snapshots: list[torch.Tensor]) -> float:
    """``||w_i - w_{i-k}||_1 / sum_j ||w_j - w_{j-1}||_1`` over ``k + 1`` snapshots: near 1 while the
    block moves steadily, near 0 once its updates cancel out (it has settled)."""
    path = sum(float((b - a).abs().sum()) for a, b in pairwise(snapshots))
    return float((snapshots[-1] - snapshots[0]).abs().sum()) / path if path > 0 else 0.0


class Sequential:
    def __init__(self, rounds: list[int], threshold: float = 0.0, window: int = 3) -> None:
        if not rounds or min(rounds) < 1:
            raise ValueError(f"every stage needs at least one round, got {rounds}")
        self.rounds, self.threshold, self.window = rounds, threshold, window
        self.num_stages = len(rounds)
        self.current, self.start, self.settled = 1, 1, False
        self.snapshots: deque[torch.Tensor] = deque(maxlen=window + 1)

    def stage(self, rnd: int) -> int:
        done = rnd - self.start >= self.rounds[self.current - 1] or self.settled
        if done and self.current < self.num_stages:
            self.current, self.start, self.settled = self.current + 1, rnd, False
            self.snapshots.clear()
        return self.current

    def observe(self, block: nn.Module) -> None:
        """After a stage aggregated: track its block's movement (movement trigger only)."""
        if self.threshold <= 0:
            return
        self.snapshots.append(torch.cat([p.detach().flatten().float().cpu() for p in block.parameters()]))
        if len(self.snapshots) == self.snapshots.maxlen:
            self.settled = effective_movement(list(self.snapshots)) < self.threshold

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current, "start": self.start, "settled": self.settled,
                "snapshots": list(self.snapshots)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current, self.start, self.settled = state["current"], state["start"], state["settled"]
        self.snapshots = deque(state["snapshots"], maxlen=self.window + 1)
