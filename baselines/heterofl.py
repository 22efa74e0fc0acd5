"""HeteroFL (Diao et al., ICLR 2021) and FedRolex (Alam et al., NeurIPS 2022).

HeteroFL: static nested sub-models (each layer's leftmost channels) at rates such as 1, 1/2, ...,
1/16, static BN, a scaler that divides activations by the rate in training, entries averaged over
the clients that trained them (plain mean, as the paper's code), and an optional masked
cross-entropy for label skew. FedRolex keeps all of that but rolls each layer's window of channels
by one every round (mod the layer's width), so every global parameter is trained evenly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from baselines.norms import static_norm
from baselines.submodel import Pick, rolling
from baselines.width import WidthMethod, WidthParams
from harness.fleet import Device
from harness.methods import TaskSpec, register_method
from harness.models.base import NormLayer
from harness.training import LossFn, Task


@dataclass
class HeteroFLParams(WidthParams):
    weighted: bool = False  # the paper's code averages each entry over its clients, unweighted
    scaler: bool = True
    masked_ce: bool = False  # label skew: logits of classes absent from the client's data are masked out


def masked_cross_entropy(label_counts: list[int], device: torch.device) -> LossFn:
    """HeteroFL's masked loss: logits of classes absent from the client's data are set to 0."""
    absent = torch.tensor([c == 0 for c in label_counts], device=device)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x).masked_fill(absent, 0.0), y)

    return loss


@register_method("heterofl")
class HeteroFL(WidthMethod):
    Params = HeteroFLParams

    def norm(self, rate: float) -> NormLayer:
        return static_norm(rate if self.params.scaler else 1.0)

    def build_task(self, spec: TaskSpec) -> Task:
        task = super().build_task(spec)
        if self.params.masked_ce:  # the estimate runs the same masking, with no class absent
            task.loss = masked_cross_entropy([1] * self.ctx.num_classes, self.ctx.device)
        return task

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = super().client_task(rnd, device, spec)
        if self.params.masked_ce:
            task.loss = masked_cross_entropy(self.ctx.client_labels[device.id], self.ctx.device)
        return task


def window_offset(rnd: int) -> int:
    """Round 1 starts at channel 0 (HeteroFL's window); each round moves it by one."""
    return rnd - 1


@register_method("fedrolex")
class FedRolex(HeteroFL):
    def pick(self, rnd: int) -> Pick:
        return rolling(window_offset(rnd))
