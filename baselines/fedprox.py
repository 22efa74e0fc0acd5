"""FedProx (Li et al., MLSys 2020): FedAvg whose local objective keeps a client near the global model.

A client minimises ``CE + mu/2 * ||w - w_global||^2`` over its trainable parameters, so it holds a
copy of the global weights next to its model; that copy is part of its memory (``state``) in the
estimate and the measurement, and only devices whose budget fits the full model plus the copy take
part (as ExclusiveFL). FedProx's other half, accepting partial local work from stragglers, is not
modelled: every client runs the suite's local epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.fedavg import ExclusiveFL, FedAvgParams
from harness.fleet import Device
from harness.methods import TaskSpec, register_method
from harness.training import Task


@dataclass
class FedProxParams(FedAvgParams):
    mu: float = 0.01  # weight of the proximal term (the paper tunes it over 0.001, 0.01, 0.1, 1)

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")


class ProximalLoss:
    """Cross-entropy plus ``mu/2 * ||w - w_global||^2``; holds the client's copy of the global weights
    (``anchor``), on the device the client trains on."""

    def __init__(self, model: nn.Module, mu: float, device: torch.device) -> None:
        self.mu = mu
        self.anchor = [p.detach().to(device, copy=True) for p in model.parameters() if p.requires_grad]

    def anchor_at(self, model: nn.Module) -> None:
        """Take ``model``'s current weights (the global ones) as the anchor, in place."""
        with torch.no_grad():
            for a, p in zip(self.anchor, (p for p in model.parameters() if p.requires_grad), strict=True):
                a.copy_(p)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        trainable = (p for p in model.parameters() if p.requires_grad)
        proximal = sum(((p - a) ** 2).sum() for p, a in zip(trainable, self.anchor, strict=True))
        return F.cross_entropy(model(x), y) + self.mu / 2 * proximal


@register_method("fedprox")
class FedProx(ExclusiveFL):
    Params = FedProxParams

    def build_task(self, spec: TaskSpec) -> Task:
        task = super().build_task(spec)
        task.loss = ProximalLoss(task.model, self.params.mu, self.ctx.device)
        return task

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = super().client_task(rnd, device, spec)  # the global weights are loaded after the anchor was made
        task.loss.anchor_at(task.model)
        return task
