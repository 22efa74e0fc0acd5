"""What every width-scaling method shares: a rate ladder, the largest rate that fits each device,
real width-r sub-models cut out of the global model, and per-entry aggregation back into it.

Subclasses choose the channels (``pick``), the norm layer (``norm``) and the loss (``client_task``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from baselines.norms import static_norm
from baselines.submodel import Pick, SubModel, aggregate, leftmost, shapes_of, twin_shapes
from harness.fleet import Device
from harness.methods import ClientResult, Excluded, GlobalModelMethod, TaskSpec, client_weights
from harness.models.base import NormLayer
from harness.training import Task


@dataclass
class WidthParams:
    rates: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125, 0.0625])
    weighted: bool = True  # average each entry weighted by sample count (False: plain mean)
    global_bn_stats: bool = True  # evaluate with BN statistics of the training data (HeteroFL's sBN)

    def __post_init__(self) -> None:
        if not self.rates or not all(0 < r <= 1 for r in self.rates):
            raise ValueError(f"rates must be non-empty and in (0, 1], got {self.rates}")
        if len(set(self.rates)) != len(self.rates):
            raise ValueError(f"rates must not repeat, got {self.rates}")


BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


class WidthMethod(GlobalModelMethod):
    """The global model at full width; a client trains the largest rate whose estimate fits."""

    Params = WidthParams

    def __init__(self, params: Any, ctx) -> None:
        super().__init__(params, ctx)
        self.model = self.ctx.build_model(1.0, self.norm(1.0))
        self.eval_model: nn.Module = self.model  # replaced by ``calibrate`` before each evaluation
        self.full = shapes_of(self.model)
        self.ladder = [TaskSpec("width", r) for r in sorted(self.params.rates, reverse=True)]
        self.shapes = {s.value: twin_shapes(lambda r=s.value: self.ctx.build_model(r, self.norm(r)))
                       for s in self.ladder}

    def norm(self, rate: float) -> NormLayer:
        return static_norm()

    def pick(self, rnd: int) -> Pick:
        return leftmost

    def submodel(self, rnd: int, rate: float) -> SubModel:
        return SubModel.of(self.full, self.shapes[rate], self.pick(rnd))

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        return self.largest_fitting(self.ladder, device)

    def calibrate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """HeteroFL's static BN at inference: a full-width twin with tracked BatchNorm gathers the
        global model's statistics over the training data (cumulative average), then evaluates. With
        ``global_bn_stats = false`` the global model normalises with each test batch's statistics."""
        if not self.params.global_bn_stats:
            self.eval_model = self.model
            return
        twin = self.ctx.build_model(1.0)
        for module in twin.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = None
        missing, unexpected = twin.load_state_dict(self.model.state_dict(), strict=False)
        if unexpected or not all(k.endswith(BN_STATS) for k in missing):
            raise RuntimeError(f"the tracked-BN twin does not match the global model: {missing} {unexpected}")
        twin.train()
        with torch.no_grad():
            for x, _ in batches:
                twin.to(x.device)(x)
        self.eval_model = twin.cpu()

    def eval_models(self) -> dict[str, nn.Module | None]:
        return {"global": self.eval_model}

    def memory_specs(self) -> list[TaskSpec]:
        return self.ladder

    def build_task(self, spec: TaskSpec) -> Task:
        return Task(self.ctx.build_model(spec.value, self.norm(spec.value)))

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = self.build_task(spec)
        task.model.load_state_dict(self.submodel(rnd, spec.value).extract(self.model.state_dict()))
        return task

    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        weights = client_weights(results, self.params.weighted)
        uploads = [(self.submodel(rnd, r.spec.value), r.local.state, w) for r, w in zip(results, weights)]
        self.model.load_state_dict(aggregate(self.model.state_dict(), uploads))
