"""NeuLite's parameters, as a suite's ``[[methods]]`` table gives them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


def per_stage(values: list[float], num_stages: int) -> list[float]:
    """One value per stage: a list as long as the model has stages is taken as is; any other list
    is read as evenly spaced over depth and linearly interpolated (``[a, b]``: from a to b)."""
    if len(values) == num_stages:
        return list(values)
    if len(values) == 1:
        return values * num_stages
    depth = np.linspace(0.0, 1.0, num_stages)
    return [float(v) for v in np.interp(depth, np.linspace(0.0, 1.0, len(values)), values)]


@dataclass
class NeuLiteParams:
    # Curriculum mentor: λ1 weighs nHSIC(Z_t, X), λ2 weighs nHSIC(P(z_t), Y); per stage (see
    # ``per_stage``). λ1 falls and λ2 rises with depth; the defaults come from the tuning run
    # recorded in docs/neulite.md. ``mentor = false`` turns both terms off.
    mentor: bool = True
    lambda1: list[float] = field(default_factory=lambda: [2.0, 0.2])
    lambda2: list[float] = field(default_factory=lambda: [0.2, 2.0])
    sigma: float = 5.0  # Gaussian kernel width (the release's)
    # Training harmonizer: ``harmonizer = false`` sets no overlap and no refresh from the full model.
    harmonizer: bool = True
    overlap: int = 1  # trailing conv+BN pairs of block t-1 trained in stage t (0 = none)
    # Frozen blocks' norm layers: "train" (the release's: batch statistics, running statistics
    # updated, uploaded and aggregated) or "eval" (their running statistics, untouched).
    frozen_bn: Literal["train", "eval"] = "train"
    # Output-module convolutions: no bias, as the release builds them (``true``: a zero-initialised
    # bias, since no normalisation follows them).
    output_bias: bool = False
    # Schedule: ``cyclic`` (round r trains stage ((r-1) mod T)+1) or ``sequential``.
    schedule: Literal["cyclic", "sequential"] = "cyclic"
    stage_rounds: list[int] = field(default_factory=list)  # sequential: R_t (one value: all stages)
    sequential_rounds: int = 20  # sequential without stage_rounds: split over stages by block size
    movement_threshold: float = 0.0  # sequential: move on when effective movement < this (0 = off)
    movement_window: int = 3  # k aggregations of the movement trigger
    weighted: bool = True  # FedAvg weighted by client samples (False: the release's plain mean)

    def __post_init__(self) -> None:
        if not self.lambda1 or not self.lambda2 or min(self.lambda1 + self.lambda2) < 0:
            raise ValueError("lambda1 and lambda2 must be non-empty lists of values >= 0")
        if self.sigma <= 0:
            raise ValueError(f"sigma must be positive, got {self.sigma}")
        if self.overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {self.overlap}")
        if any(r < 1 for r in self.stage_rounds) or self.sequential_rounds < 1:
            raise ValueError("stage_rounds and sequential_rounds must be at least 1")
        if self.movement_threshold < 0 or self.movement_window < 1:
            raise ValueError("movement_threshold must be >= 0 and movement_window >= 1")
        if self.schedule == "cyclic" and (self.stage_rounds or self.movement_threshold):
            raise ValueError("stage_rounds and movement_threshold apply to schedule = 'sequential' only")

    def lambdas(self, num_stages: int) -> list[tuple[float, float]]:
        """(λ1, λ2) of every stage; zeros when the mentor is off."""
        if not self.mentor:
            return [(0.0, 0.0)] * num_stages
        lambda1, lambda2 = per_stage(self.lambda1, num_stages), per_stage(self.lambda2, num_stages)
        return list(zip(lambda1, lambda2, strict=True))

    @property
    def effective_overlap(self) -> int:
        return self.overlap if self.harmonizer else 0
