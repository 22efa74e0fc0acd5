"""DepthFL (Kim et al., ICLR 2023): depth-scaled local models with deep mutual self-distillation.

The global model is the zoo model's blocks with a classifier after every block. A device of depth
``k`` (the deepest that fits its budget) trains blocks ``0..k-1`` and their ``k`` classifiers, on
the sum of the classifiers' cross-entropies plus mutual self-distillation (each classifier learns
the others' detached predictions by KL). Each layer is averaged over the clients that hold it.
The server evaluates the deepest classifier and the ensemble of all of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from harness.config import ConfigError
from harness.fleet import Device
from harness.methods import (
    ClientResult,
    Excluded,
    GlobalModelMethod,
    TaskSpec,
    client_weights,
    register_method,
    weighted_average,
)
from harness.models.base import ClassifierHead
from harness.training import Task


@dataclass
class DepthFLParams:
    depths: list[int] = field(default_factory=list)  # empty: every depth from all blocks down to 1
    distill: bool = True  # mutual self-distillation between the classifiers
    temperature: float = 1.0
    weighted: bool = True  # weight clients by sample count

    def __post_init__(self) -> None:
        if any(d < 1 for d in self.depths) or self.temperature <= 0:
            raise ValueError("depths must be at least 1 and temperature positive")


class DeeplySupervised(nn.Module):
    """The first ``len(heads)`` blocks of a zoo model, each followed by its own classifier."""

    def __init__(self, blocks: list[nn.Module], heads: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.heads = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        logits = []
        for block, head in zip(self.blocks, self.heads, strict=True):
            x = block(x)
            logits.append(head(x))
        return logits


class Deepest(nn.Module):
    def __init__(self, net: DeeplySupervised) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[-1]


class Ensemble(Deepest):
    """Log of the classifiers' mean softmax: logits whose cross-entropy is the ensemble's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        log_probs = torch.stack([F.log_softmax(z, 1) for z in logits])
        return torch.logsumexp(log_probs, 0) - math.log(len(logits))  # stays finite where softmax underflows


def depthfl_loss(temperature: float, distill: bool):
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        total = sum(F.cross_entropy(z, y) for z in logits)
        if distill and len(logits) > 1:
            t = temperature
            for i, z in enumerate(logits):
                log_p = F.log_softmax(z / t, 1)
                kl = sum(F.kl_div(log_p, F.softmax(o.detach() / t, 1), reduction="batchmean")
                         for j, o in enumerate(logits) if j != i)
                total = total + kl * (t * t / (len(logits) - 1))
        return total

    return loss


@register_method("depthfl")
class DepthFL(GlobalModelMethod):
    Params = DepthFLParams

    def __init__(self, params: Any, ctx) -> None:
        super().__init__(params, ctx)
        self.model = self.build_net(None)
        depths = self.params.depths or range(1, len(self.model.blocks) + 1)
        if max(depths) > len(self.model.blocks):
            raise ConfigError(f"depthfl depths {list(depths)} exceed the {len(self.model.blocks)} blocks "
                              f"of {self.ctx.model.name}")
        self.ladder = [TaskSpec("depth", d) for d in sorted(set(depths), reverse=True)]

    def build_net(self, depth: int | None) -> DeeplySupervised:
        base = self.ctx.build_model()
        heads = [ClassifierHead(i.out_channels, base.num_classes) for i in base.block_info]
        return DeeplySupervised(list(base.blocks[:depth]), heads[:depth])

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        return self.largest_fitting(self.ladder, device)

    def memory_specs(self) -> list[TaskSpec]:
        return self.ladder

    def build_task(self, spec: TaskSpec) -> Task:
        loss = depthfl_loss(self.params.temperature, self.params.distill)
        return Task(self.build_net(int(spec.value)), loss)

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = self.build_task(spec)
        state = self.model.state_dict()
        task.model.load_state_dict({k: state[k] for k in task.model.state_dict()})
        return task

    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        """Layer-wise FedAvg: each tensor over the clients whose depth includes it."""
        state = self.model.state_dict()
        for key in state:
            holders = [r for r in results if key in r.local.state]
            if holders:
                weights = client_weights(holders, self.params.weighted)
                state[key] = weighted_average([{key: r.local.state[key]} for r in holders], weights)[key]
        self.model.load_state_dict(state)

    def eval_models(self) -> dict[str, nn.Module]:
        return {"deepest": Deepest(self.model), "ensemble": Ensemble(self.model)}
