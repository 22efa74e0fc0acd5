"""Full-model FedAvg (McMahan et al. 2017) and its two memory policies.

- ``fedavg``: every selected device trains the full model, budgets ignored: the accuracy a fleet
  with unlimited memory would reach (measured overruns are still recorded as ``over_budget``).
- ``exclusive`` (ExclusiveFL): only devices whose budget fits the full model take part.
- ``allsmall`` (AllSmall): every device trains the same width-scaled model, the largest one that fits
  the weakest device of the fleet; that small model is the one evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
from harness.training import Task

FULL = TaskSpec("full")


@dataclass
class FedAvgParams:
    weighted: bool = True  # weight clients by sample count (False: plain mean)


@register_method("fedavg")
class FedAvg(GlobalModelMethod):
    family = "full model"
    Params = FedAvgParams
    respects_budgets = False

    def __init__(self, params: Any, ctx) -> None:
        super().__init__(params, ctx)
        self.spec = self.global_spec()
        self.model = self.ctx.build_model(self.width_of(self.spec))

    def global_spec(self) -> TaskSpec | None:
        return FULL

    @staticmethod
    def width_of(spec: TaskSpec | None) -> float:
        return 1.0 if spec is None or spec.kind == "full" else float(spec.value)

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        return self.spec

    def build_task(self, spec: TaskSpec) -> Task:
        return Task(self.ctx.build_model(self.width_of(spec)))

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = self.build_task(spec)
        load_weights(task.model, self.model.state_dict(keep_vars=True))  # the server's tensors, no view made of each
        return task

    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        weights = client_weights(results, self.params.weighted)
        self.model.load_state_dict(weighted_average([r.local.state for r in results], weights))


@register_method("exclusive")
class ExclusiveFL(FedAvg):
    respects_budgets = True

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        return self.largest_fitting([FULL], device)


@dataclass
class AllSmallParams(FedAvgParams):
    widths: list[float] = field(default_factory=lambda: [1.0, 0.5, 0.25, 0.125, 0.0625])

    def __post_init__(self) -> None:
        if not self.widths or not all(0 < w <= 1 for w in self.widths):
            raise ValueError(f"widths must be non-empty and in (0, 1], got {self.widths}")


@register_method("allsmall")
class AllSmall(FedAvg):
    Params = AllSmallParams
    respects_budgets = True

    def global_spec(self) -> TaskSpec | None:
        """The largest width that the weakest device can train; None when even the smallest fails."""
        weakest = min(self.ctx.fleet, key=lambda d: d.budget)
        choice = self.largest_fitting(self.memory_specs(), weakest)
        self.no_fit_reason = choice.reason if isinstance(choice, Excluded) else ""
        return None if isinstance(choice, Excluded) else choice

    def memory_specs(self) -> list[TaskSpec]:
        return [TaskSpec("width", w) for w in sorted(self.params.widths, reverse=True)]

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        if self.spec is None:
            return Excluded(f"no width fits the weakest device ({self.no_fit_reason})")
        return self.spec
