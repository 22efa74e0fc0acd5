"""The full model made to fit, the baselines a reviewer asks for first: every device trains the
whole model, in micro-batches with gradient accumulation (``microbatch``) or with its leading
blocks' activations recomputed in the backward pass (``checkpoint``), or both.

Each device takes the cheapest setting whose estimated peak fits its budget (``Method.fitting``):
whole batches if they fit, else the largest micro-batch, and for each micro-batch the fewest
checkpointed blocks. The optimizer sees the suite's batch either way; only batch-norm statistics
come from micro-batches (docs/baselines.md). Everything else is FedAvg.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from baselines.fedavg import FULL, FedAvg, FedAvgParams
from harness.fleet import Device
from harness.methods import Excluded, TaskSpec, register_method


@dataclass
class FitParams(FedAvgParams):
    micro_batches: list[int] = field(default_factory=lambda: [64, 32, 16, 8, 4, 2, 1])
    checkpoint: bool = False  # also checkpoint the fewest leading blocks that fit

    def __post_init__(self) -> None:
        if not all(isinstance(m, int) and m >= 1 for m in self.micro_batches):
            raise ValueError(f"micro_batches must be positive integers, got {self.micro_batches}")


@dataclass
class CheckpointParams(FitParams):
    micro_batches: list[int] = field(default_factory=list)  # checkpointing alone; add sizes to combine
    checkpoint: bool = True


@register_method("microbatch")
class MicroBatch(FedAvg):
    family = "full model, fitted per step"
    Params = FitParams
    respects_budgets = True

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        return self.fitting(FULL, device, self.params.micro_batches, self.params.checkpoint)

    def memory_specs(self) -> list[TaskSpec]:
        """Every setting this method may give a device, from whole batches to the smallest."""
        return self.fitting_options(FULL, self.params.micro_batches, self.params.checkpoint)


@register_method("checkpoint")
class Checkpoint(MicroBatch):
    Params = CheckpointParams
