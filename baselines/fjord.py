"""FjORD (Horváth et al., NeurIPS 2021): ordered dropout, as its reference code (the authors' Flower
baseline) does it.

A device's resident model is its largest sub-model (width ``p_max``, the leftmost channels of the
global model, materialised). Every local step samples ``p`` uniformly from the rates up to
``p_max`` and trains the leftmost-``p`` part of the resident model, slicing its weights inside the
forward pass. Batch norm keeps running statistics per width with one shared affine transform
(``OrderedBatchNorm2d``), and each width is evaluated with its own statistics. With ``distill``,
each step first trains the ``p_max`` model on the labels (its own backward pass), then the sampled
width on the ``p_max`` model's detached softmax (soft-target cross-entropy).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from baselines.norms import OrderedBatchNorm2d
from baselines.submodel import Shapes, twin_shapes
from baselines.width import WidthMethod, WidthParams
from harness.fleet import Device
from harness.methods import Excluded, TaskSpec, load_weights, register_method
from harness.models.base import NormLayer
from harness.seeds import derived_seed
from harness.training import Task


@dataclass
class FjORDParams(WidthParams):
    rates: list[float] = field(default_factory=lambda: [1.0, 0.8, 0.6, 0.4, 0.2])  # the paper's p
    distill: bool = False  # in-place knowledge distillation from the client's p_max model
    eval_rates: list[float] = field(default_factory=list)  # widths evaluated besides the headline one

    def __post_init__(self) -> None:
        super().__post_init__()
        if not set(self.eval_rates) <= set(self.rates):
            raise ValueError(f"eval_rates {self.eval_rates} must be among the rates {self.rates}")


def leftmost_forward(model: nn.Module, shapes: Shapes, x: torch.Tensor) -> torch.Tensor:
    """``model`` run with each parameter cut to its leftmost ``shapes`` (views: no copies)."""
    views = {name: p[tuple(slice(0, n) for n in shapes[name])] for name, p in model.named_parameters()}
    return functional_call(model, views, (x,))


def norm_channels(build: Callable[[], nn.Module]) -> list[int]:
    """The channel count of every batch norm of a model, in module order (built on meta)."""
    return [shape[0] for key, shape in twin_shapes(build).items() if key.endswith("running_mean")]


@dataclass
class OrderedDropout:
    """The loss of one FjORD client; ``sample()`` gives each step's ``p``."""

    shapes: dict[float, Shapes]
    p_max: float
    sample: Callable[[], float]
    distill: bool

    def at(self, model: nn.Module, p: float, x: torch.Tensor) -> torch.Tensor:
        return model(x) if p == self.p_max else leftmost_forward(model, self.shapes[p], x)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor | Iterator[torch.Tensor]:
        p = self.sample()
        if not self.distill:
            return F.cross_entropy(self.at(model, p, x), y)
        return self.distilled(model, p, x, y)

    def distilled(self, model: nn.Module, p: float, x: torch.Tensor, y: torch.Tensor) -> Iterator[torch.Tensor]:
        """Two backward passes, one optimizer step: the teacher on the labels, then the student on
        the teacher's soft targets (the sampled p may be p_max itself, as in the reference)."""
        teacher = model(x)
        yield F.cross_entropy(teacher, y)
        target = teacher.detach().softmax(1)
        yield F.cross_entropy(self.at(model, p, x), target)


@register_method("fjord")
class FjORD(WidthMethod):
    Params = FjORDParams
    chance_cause = ("each width is evaluated with its own running statistics, which move only in the local "
                    "steps that draw that width: with few steps spread over several widths they lag the trained "
                    "weights (docs/baselines.md, 'FjORD at chance')")

    @cached_property
    def norm_widths(self) -> dict[float, dict[int, tuple[int, ...]]]:
        """Per twin rate r, per channel count of its norm layers: the channel counts of every rate
        p <= r at that layer (the statistics its ``OrderedBatchNorm2d`` keeps)."""
        rates = self.params.rates
        counts = {r: norm_channels(lambda r=r: self.ctx.build_model(r)) for r in {*rates, 1.0}}
        table: dict[float, dict[int, tuple[int, ...]]] = {}
        for r, layers in counts.items():
            table[r] = {}
            for i, c in enumerate(layers):
                widths = tuple(sorted({counts[p][i] for p in rates if p <= r}))
                if table[r].setdefault(c, widths) != widths:
                    raise ValueError(f"fjord: two norm layers of {c} channels at width {r} need different "
                                     f"statistics; use a larger model.width")
        return table

    def norm(self, rate: float) -> NormLayer:
        widths = self.norm_widths[rate]
        return lambda channels: OrderedBatchNorm2d(channels, widths[channels])

    def allowed(self, p_max: float) -> list[float]:
        return [s.value for s in self.ladder if s.value <= p_max]

    def build_task(self, spec: TaskSpec) -> Task:
        """The estimate's task: every step takes the peak ``p``, which is ``p_max``."""
        task = super().build_task(spec)
        task.loss = OrderedDropout(self.shapes, spec.value, lambda: spec.value, self.params.distill)
        task.splittable = task.checkpointable = False  # p is drawn per step; the loss swaps the weights
        return task

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = super().client_task(rnd, device, spec)
        rng = random.Random(derived_seed(self.ctx.seed, rnd, device.id, 0xF30D))
        allowed = self.allowed(spec.value)
        task.loss = OrderedDropout(self.shapes, spec.value, lambda: rng.choice(allowed), self.params.distill)
        task.splittable = task.checkpointable = False
        task.steps_alike = False  # each step's width is drawn: all are measured
        return task

    def flops_per_sample(self, spec: TaskSpec) -> float:
        """The expected FLOPs of a step: p is uniform over the allowed widths, plus the p_max
        teacher's pass with ``distill`` (whose task already holds a teacher and a student)."""
        per_pass = {p: self.cost(TaskSpec("width", p)).flops_per_sample / (2 if self.params.distill else 1)
                    for p in self.allowed(spec.value)}
        student = sum(per_pass.values()) / len(per_pass)
        return student + (per_pass[spec.value] if self.params.distill else 0.0)

    @cached_property
    def headline_rate(self) -> float:
        """The widest p that some device of the fleet can train: wider ones are never trained (their
        statistics never gathered), so no deployment could use them."""
        fits = [self.choose(0, d) for d in self.ctx.fleet]
        return max((s.value for s in fits if not isinstance(s, Excluded)), default=self.ladder[-1].value)

    def width_model(self, rate: float) -> nn.Module:
        """The width-``rate`` model with its own statistics, cut out of the global model."""
        return load_weights(self.ctx.build_model(rate, self.norm(rate)),
                            self.submodel(0, rate).extract(self.model.state_dict()))

    def eval_models(self) -> dict[str, nn.Module | None]:
        rates = [self.headline_rate, *(r for r in sorted(self.params.eval_rates, reverse=True)
                                       if r != self.headline_rate)]
        return {f"p={r:g}": self.width_model(r) for r in rates}
