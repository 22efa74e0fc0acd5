"""The curriculum mentor (NEULITE.md section 3): the per-stage loss.

``L_t = CE - λ1[t] nHSIC(Z_t, X) - λ2[t] nHSIC(P(z_t), Y)``: early stages are pushed to keep the
input's information (large λ1), late ones to become label-discriminative (large λ2). A zero λ
skips its term entirely, so an ablation costs neither compute nor memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neulite.hsic import nhsic
from neulite.stages import StageModel


@dataclass(frozen=True)
class MentorLoss:
    """A picklable loss for ``Task.loss``; reads no tensor value into Python (fake tensors)."""

    lambda1: float
    lambda2: float
    sigma: float
    num_classes: int

    def __call__(self, model: StageModel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z, pooled = model.features(x)
        loss = F.cross_entropy(model.out.head.fc(pooled), y)
        if self.lambda1:
            loss = loss - self.lambda1 * nhsic(z.flatten(1), x.flatten(1), self.sigma)
        if self.lambda2:
            one_hot = (y.unsqueeze(1) == torch.arange(self.num_classes, device=y.device)).float()
            loss = loss - self.lambda2 * nhsic(model.out.proj(pooled), one_hot, self.sigma)
        return loss
