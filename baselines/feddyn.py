"""FedDyn (Acar et al., ICLR 2021) dynamic regularisation, in the form DepthFL's reference uses it.

Client k adds ``-<g_k, w> + alpha/2 * ||w - w_global||^2`` to its loss over its trainable
parameters, where ``g_k`` is its gradient correction, kept on the client between rounds and updated
after local training as ``g_k -= alpha * (w_k - w_global)``. The server keeps ``h`` per parameter:
``h -= alpha * n / N * (mean - w_global)`` (``n`` clients held the entry, ``N`` devices in all) and
the new global value is ``mean - h / alpha``. The client's copy of the global weights and its
correction are its memory (``state``), created on the device it trains on.
"""

from __future__ import annotations

import torch
from torch import nn

from baselines.fedprox import GlobalCopy
from harness.training import trainable_parameters


class DynamicRegularizer:
    """The client's FedDyn term; holds its copy of the global weights and its gradient correction.
    The quadratic term goes through autograd, as in DepthFL's reference (which keeps ``w - w_global``
    for the backward pass)."""

    def __init__(self, model: nn.Module, alpha: float, device: torch.device) -> None:
        self.alpha = alpha
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.anchor = GlobalCopy(model, device)
        self.correction = [torch.zeros_like(a) for a in self.anchor.tensors]

    def load(self, model: nn.Module, correction: dict[str, torch.Tensor]) -> None:
        """In place: ``model``'s current (global) weights as the anchor, and the client's stored
        correction (zero for a client that never trained)."""
        self.anchor.load(model)
        with torch.no_grad():
            for name, g in zip(self.names, self.correction, strict=True):
                if name in correction:
                    g.copy_(correction[name])
                else:
                    g.zero_()

    def __call__(self, model: nn.Module) -> torch.Tensor:
        params = trainable_parameters(model)
        linear = sum((p * g).sum() for p, g in zip(params, self.correction, strict=True))
        quadratic = sum(((p - a) ** 2).sum() for p, a in zip(params, self.anchor.tensors, strict=True))
        return self.alpha / 2 * quadratic - linear


Tensors = dict[str, torch.Tensor]


def updated_correction(correction: Tensors, trained: Tensors, global_state: Tensors, names: list[str],
                       alpha: float) -> Tensors:
    """A client's correction after local training: ``g - alpha * (w_trained - w_global)`` per name."""
    return {name: correction.get(name, torch.zeros_like(global_state[name]))
            - alpha * (trained[name].float() - global_state[name].float()) for name in names}


def server_step(h: torch.Tensor, mean: torch.Tensor, previous: torch.Tensor, holders: int, devices: int,
                alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's ``h`` and the new global value of one parameter from the clients' mean."""
    h = h - alpha * holders / devices * (mean - previous)
    return h, mean - h / alpha
