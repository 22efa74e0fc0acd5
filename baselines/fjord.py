"""FjORD (Horváth et al., NeurIPS 2021): ordered dropout with optional self-distillation.

A device's resident model is its largest sub-model (width ``p_max``, the leftmost channels of the
global model, materialised). Every local step samples ``p`` uniformly from the rates up to
``p_max`` and trains the leftmost-``p`` part of the resident model: slicing its weights inside the
forward pass, which is the method. With ``distill``, the ``p_max`` model is the teacher of the
sampled one (in-place distillation: the teacher is trained on the labels, the student on
``(1 - alpha)`` CE + ``alpha`` KL to the teacher's detached, tempered predictions).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from baselines.submodel import Shapes
from baselines.width import WidthMethod, WidthParams
from harness.engine import derived_seed
from harness.fleet import Device
from harness.methods import TaskSpec, register_method
from harness.training import Task


@dataclass
class FjORDParams(WidthParams):
    rates: list[float] = field(default_factory=lambda: [1.0, 0.8, 0.6, 0.4, 0.2])  # the paper's p
    distill: bool = False
    alpha: float = 0.5  # weight of the distillation term in the student's loss
    temperature: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.alpha <= 1 or self.temperature <= 0:
            raise ValueError("alpha must be in [0, 1] and temperature positive")


def leftmost_forward(model: nn.Module, shapes: Shapes, x: torch.Tensor) -> torch.Tensor:
    """``model`` run with each parameter cut to its leftmost ``shapes`` (views: no copies)."""
    views = {name: p[tuple(slice(0, n) for n in shapes[name])] for name, p in model.named_parameters()}
    return functional_call(model, views, (x,))


@dataclass
class OrderedDropout:
    """The loss of one FjORD client; ``sample()`` gives each step's ``p``."""

    shapes: dict[float, Shapes]
    p_max: float
    sample: Callable[[], float]
    params: FjORDParams

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        p = self.sample()
        if p == self.p_max:
            return F.cross_entropy(model(x), y)
        student = leftmost_forward(model, self.shapes[p], x)
        if not self.params.distill:
            return F.cross_entropy(student, y)
        teacher = model(x)
        t, a = self.params.temperature, self.params.alpha
        kd = F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher.detach() / t, 1),
                      reduction="batchmean") * t * t
        return F.cross_entropy(teacher, y) + (1 - a) * F.cross_entropy(student, y) + a * kd


@register_method("fjord")
class FjORD(WidthMethod):
    Params = FjORDParams

    def allowed(self, p_max: float) -> list[float]:
        return [s.value for s in self.ladder if s.value <= p_max]

    def build_task(self, spec: TaskSpec) -> Task:
        """The estimate's task: every step takes the peak ``p`` deterministically, which is
        ``p_max`` alone, or with ``distill`` the ``p_max`` teacher plus the largest student."""
        allowed = self.allowed(spec.value)
        peak = allowed[1] if self.params.distill and len(allowed) > 1 else spec.value
        task = super().build_task(spec)
        task.loss = OrderedDropout(self.shapes, spec.value, lambda: peak, self.params)
        return task

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = super().client_task(rnd, device, spec)
        rng = random.Random(derived_seed(self.ctx.seed, rnd, device.id, 0xF30D))
        allowed = self.allowed(spec.value)
        task.loss = OrderedDropout(self.shapes, spec.value, lambda: rng.choice(allowed), self.params)
        return task
