"""DepthFL (Kim et al., ICLR 2023): depth-scaled local models with deep mutual self-distillation, as
its reference code (the authors' Flower baseline) does it.

The global model is the zoo model's blocks with a classifier after every block. A shallow exit
(after block i < T) is the reference's bottleneck: an attention gate (a separable convolution,
upsampled back to a sigmoid map that multiplies the features), then one strided separable
convolution per later block up to the last block's channels, pooling and a linear classifier; the
deepest exit is the model's own head. A device of depth ``k`` (the deepest that fits its budget)
holds blocks ``0..k-1`` and their ``k`` exits and trains them on the sum of the exits'
cross-entropies, plus mutual self-distillation (each exit learns every other's detached prediction
by KL, weighted by a ramp ``exp(-5 (1 - r/R)^2)``), plus FedDyn regularisation. Each entry is
averaged over the clients that hold it; the server evaluates the mean of all exits' logits (the
reference's global accuracy) and the deepest exit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from baselines.feddyn import DynamicRegularizer, server_step, updated_correction
from harness.config import ConfigError
from harness.fleet import Device
from harness.methods import (
    ClientResult,
    Excluded,
    GlobalModelMethod,
    TaskSpec,
    client_weights,
    load_weights,
    register_method,
    weighted_average,
)
from harness.models.base import BlockInfo, ClassifierHead, NormLayer
from harness.training import Task


@dataclass
class DepthFLParams:
    depths: list[int] = field(default_factory=list)  # empty: every depth from all blocks down to 1
    distill: bool = True  # mutual self-distillation between the exits
    temperature: float = 1.0
    rampup: float = 0.3  # the distillation weight ramps up over this share of the run's rounds (300 of 1000)
    feddyn: bool = True  # FedDyn regularisation, as the reference
    alpha: float = 0.1  # FedDyn's alpha
    weighted: bool = False  # the reference averages each entry over its clients, unweighted

    def __post_init__(self) -> None:
        if any(d < 1 for d in self.depths) or self.temperature <= 0:
            raise ValueError("depths must be at least 1 and temperature positive")
        if not 0 <= self.rampup <= 1 or self.alpha <= 0:
            raise ValueError("rampup must be in [0, 1] and alpha positive")


def sep_conv(cin: int, cout: int, stride: int, norm: NormLayer) -> nn.Sequential:
    """The reference's separable convolution: depthwise (strided) and pointwise, norm, ReLU, then
    depthwise and pointwise to ``cout``, norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.Conv2d(cin, cin, 1, bias=False),
        norm(cin), nn.ReLU(),
        nn.Conv2d(cin, cin, 3, 1, 1, groups=cin, bias=False), nn.Conv2d(cin, cout, 1, bias=False),
        norm(cout), nn.ReLU(),
    )


class AttentionGate(nn.Module):
    """``x * sigmoid(up(relu(norm(sep_conv(x)))))``; the map is upsampled back to ``x``'s size
    (the reference's 2x bilinear upsampling, for sizes that halve evenly)."""

    def __init__(self, channels: int, norm: NormLayer) -> None:
        super().__init__()
        self.body = nn.Sequential(sep_conv(channels, channels, 2, norm), norm(channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(self.body(x), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(up)


class BottleneckExit(nn.Module):
    """The classifier after block ``i`` of a model that has later blocks: attention, one separable
    convolution per later block (its channels and stride), pooling, linear."""

    def __init__(self, i: int, blocks: list[BlockInfo], num_classes: int, norm: NormLayer) -> None:
        super().__init__()
        self.attention = AttentionGate(blocks[i].out_channels, norm)
        self.convs = nn.Sequential(*(sep_conv(blocks[j - 1].out_channels, blocks[j].out_channels, blocks[j].stride,
                                              norm) for j in range(i + 1, len(blocks))))
        self.head = ClassifierHead(blocks[-1].out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(self.attention(x)))


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
    """The mean of every exit's logits (the reference's ensemble)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.net(x)).mean(0)


def ramp(rnd: int, rampup_rounds: float) -> float:
    """The reference's distillation weight ``exp(-5 (1 - t/R)^2)``, t = rnd - 1 capped at R."""
    if rampup_rounds <= 0:
        return 1.0
    phase = 1.0 - min(rnd - 1, rampup_rounds) / rampup_rounds
    return math.exp(-5.0 * phase * phase)


@dataclass
class DepthFLLoss:
    """Summed cross-entropy of the exits, ``weight`` times mutual KL distillation (each exit against
    every other's detached prediction, divided by the number of others), and the FedDyn term."""

    distill_weight: float
    temperature: float
    regularizer: DynamicRegularizer | None

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        total = sum(F.cross_entropy(z, y) for z in logits)
        if self.distill_weight and len(logits) > 1:
            t = self.temperature
            for i, z in enumerate(logits):
                log_p = F.log_softmax(z / t, 1)
                kl = sum(F.kl_div(log_p, F.softmax(o.detach() / t, 1), reduction="batchmean")
                         for j, o in enumerate(logits) if j != i)
                total = total + kl * (self.distill_weight * t * t / (len(logits) - 1))
        if self.regularizer is not None:
            total = total + self.regularizer(model)
        return total


@register_method("depthfl")
class DepthFL(GlobalModelMethod):
    family = "depth scaling"
    Params = DepthFLParams

    def __init__(self, params: Any, ctx) -> None:
        super().__init__(params, ctx)
        self.model = self.build_net(None)
        depths = self.params.depths or range(1, len(self.model.blocks) + 1)
        if max(depths) > len(self.model.blocks):
            raise ConfigError(f"depthfl depths {list(depths)} exceed the {len(self.model.blocks)} blocks "
                              f"of {self.ctx.model.name}")
        self.ladder = [TaskSpec("depth", d) for d in sorted(set(depths), reverse=True)]
        self.parameter_names = {name for name, _ in self.model.named_parameters()}
        self.h: dict[str, torch.Tensor] = {}  # FedDyn's server state, per parameter
        self.corrections: dict[int, dict[str, torch.Tensor]] = {}  # FedDyn's client state, per device

    def build_net(self, depth: int | None) -> DeeplySupervised:
        base = self.ctx.build_model()
        info, norm = base.block_info, nn.BatchNorm2d
        heads = [BottleneckExit(i, info, base.num_classes, norm) for i in range(len(info) - 1)] + [base.head]
        return DeeplySupervised(list(base.blocks[:depth]), heads[:depth])

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        return self.largest_fitting(self.ladder, device)

    def memory_specs(self) -> list[TaskSpec]:
        return self.ladder

    def build_task(self, spec: TaskSpec, rnd: int = 1) -> Task:
        model = self.build_net(int(spec.value))
        weight = ramp(rnd, self.params.rampup * self.ctx.rounds) if self.params.distill else 0.0
        regularizer = DynamicRegularizer(model, self.params.alpha, self.ctx.device) if self.params.feddyn else None
        return Task(model, DepthFLLoss(weight, self.params.temperature, regularizer))

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = self.build_task(spec, rnd)
        state = self.model.state_dict(keep_vars=True)
        load_weights(task.model, {k: state[k] for k in task.model.state_dict(keep_vars=True)})
        if task.loss.regularizer is not None:
            task.loss.regularizer.load(task.model, self.corrections.get(device.id, {}))
        return task

    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        """Per entry over the clients that hold it; FedDyn's correction on parameters."""
        previous = self.model.state_dict()
        state = dict(previous)
        for key in state:
            holders = [r for r in results if key in r.local.state]
            if not holders:
                continue
            weights = client_weights(holders, self.params.weighted)
            mean = weighted_average([{key: r.local.state[key]} for r in holders], weights)[key]
            if self.params.feddyn and key in self.parameter_names:
                h = self.h.get(key, torch.zeros_like(mean))
                self.h[key], mean = server_step(h, mean, previous[key], len(holders), len(self.ctx.fleet),
                                                self.params.alpha)
            state[key] = mean
        if self.params.feddyn:
            for r in results:
                names = [k for k in r.local.state if k in self.parameter_names]
                self.corrections[r.device.id] = updated_correction(
                    self.corrections.get(r.device.id, {}), r.local.state, previous, names, self.params.alpha)
        self.model.load_state_dict(state)

    def eval_models(self) -> dict[str, nn.Module]:
        return {"ensemble": Ensemble(self.model), "deepest": Deepest(self.model)}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "h": self.h, "corrections": self.corrections}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.h, self.corrections = state["h"], state["corrections"]
