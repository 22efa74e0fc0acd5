"""FedProx (Li et al., MLSys 2020): FedAvg whose local objective keeps a client near the global model.

A client minimises ``CE + mu/2 * ||w - w_global||^2`` over its trainable parameters, so it holds a
copy of the global weights next to its model; that copy is part of its memory (``state``) in the
estimate and the measurement, and only devices whose budget fits the full model plus the copy take
part (as ExclusiveFL). The term's gradient ``mu (w - w_global)`` is recomputed in the backward pass,
as the authors' perturbed-gradient optimizer applies it, so nothing else is kept for it. FedProx's
other half, accepting partial local work from stragglers, is not modelled: every client runs the
suite's local epochs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.fedavg import ExclusiveFL, FedAvgParams
from harness.fleet import Device
from harness.methods import TaskSpec, register_method
from harness.training import Task, trainable_parameters


@dataclass
class FedProxParams(FedAvgParams):
    mu: float = 0.01  # weight of the proximal term (the paper tunes it over 0.001, 0.01, 0.1, 1)

    def __post_init__(self) -> None:
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")


class GlobalCopy:
    """The client's copy of the global weights (of its trainable parameters), on its device."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.tensors = [p.detach().to(device, copy=True) for p in trainable_parameters(model)]

    def load(self, model: nn.Module) -> None:
        """In place: take ``model``'s current weights, the global ones once they are loaded."""
        with torch.no_grad():
            for copy, p in zip(self.tensors, trainable_parameters(model), strict=True):
                copy.copy_(p)


class ProximalTerm(torch.autograd.Function):
    """``mu/2 * ||w - w_global||^2`` of one tensor, whose backward pass recomputes ``w - w_global``
    instead of keeping it from the forward pass."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, anchor: torch.Tensor, mu: float) -> torch.Tensor:
        ctx.save_for_backward(w, anchor)
        ctx.mu = mu
        return (w - anchor).pow(2).sum() * (mu / 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        w, anchor = ctx.saved_tensors
        return grad * ctx.mu * (w - anchor), None, None


class ProximalLoss:
    """Cross-entropy plus the proximal term, which is computed first so that its temporaries are
    gone before the forward pass's activations pile up."""

    def __init__(self, model: nn.Module, mu: float, device: torch.device) -> None:
        self.mu = mu
        self.anchor = GlobalCopy(model, device)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        pairs = zip(trainable_parameters(model), self.anchor.tensors, strict=True)
        proximal = sum(ProximalTerm.apply(w, a, self.mu) for w, a in pairs)
        return F.cross_entropy(model(x), y) + proximal


@register_method("fedprox")
class FedProx(ExclusiveFL):
    Params = FedProxParams

    def build_task(self, spec: TaskSpec) -> Task:
        task = super().build_task(spec)
        task.loss = ProximalLoss(task.model, self.params.mu, self.ctx.device)
        return task

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = super().client_task(rnd, device, spec)  # the global weights are loaded after the copy was made
        task.loss.anchor.load(task.model)
        return task
