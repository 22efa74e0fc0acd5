"""What every width-scaling method shares: a rate ladder, the largest rate that fits each device,
real width-r sub-models cut out of the global model, and per-entry aggregation back into it.

Subclasses choose the channels (``pick``), the norm layer (``norm``), the loss (``client_task``) and
which entries an upload stands for (``held``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from baselines.norms import static_norm
from baselines.submodel import Pick, SubModel, Upload, aggregate, leftmost, shapes_of, twin_shapes
from harness.fleet import Device
from harness.methods import ClientResult, Excluded, GlobalModelMethod, TaskSpec, client_weights, load_weights
from harness.models.base import NormLayer
from harness.training import Task


@dataclass
class WidthParams:
    rates: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125, 0.0625])
    weighted: bool = True  # average each entry weighted by sample count (False: plain mean)

    def __post_init__(self) -> None:
        if not self.rates or not all(0 < r <= 1 for r in self.rates):
            raise ValueError(f"rates must be non-empty and in (0, 1], got {self.rates}")
        if len(set(self.rates)) != len(self.rates):
            raise ValueError(f"rates must not repeat, got {self.rates}")


class WidthMethod(GlobalModelMethod):
    """The global model at full width; a client trains the largest rate whose estimate fits."""

    family = "width scaling"
    Params = WidthParams

    def __init__(self, params: Any, ctx) -> None:
        super().__init__(params, ctx)
        self.model = self.ctx.build_model(1.0, self.norm(1.0))
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

    def memory_specs(self) -> list[TaskSpec]:
        return self.ladder

    def build_task(self, spec: TaskSpec) -> Task:
        return Task(self.ctx.build_model(spec.value, self.norm(spec.value)))

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = self.build_task(spec)
        load_weights(task.model, self.submodel(rnd, spec.value).extract(self.model.state_dict()))
        return task

    def held(self, rnd: int, result: ClientResult) -> tuple[SubModel, dict[str, torch.Tensor]]:
        """Which global entries a client's upload stands for, and its values."""
        return self.submodel(rnd, result.spec.value), result.local.state

    def uploads(self, rnd: int, results: list[ClientResult]) -> list[Upload]:
        """What each client's upload stands for, its values and its weight in the average."""
        weights = client_weights(results, self.params.weighted)
        return [(*self.held(rnd, r), w) for r, w in zip(results, weights, strict=True)]

    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        self.model.load_state_dict(aggregate(self.model.state_dict(), self.uploads(rnd, results)))
