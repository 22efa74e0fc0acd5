"""A task's cost, predicted without real compute: its training memory, FLOPs and bytes exchanged.

The task is built and trained for the measured number of steps under ``FakeTensorMode`` (no data,
no arithmetic, no real memory) with the same tracker and the same training step as the real run, so
the memory estimate counts exactly what the measurement counts. The same pass counts the steps'
FLOPs (torch's FLOP formulas: convolutions and matrix products, forward and backward) and the sizes
of what the client downloads (its model's state) and uploads, for the device time model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from harness.config import OptimizerConfig
from harness.memory.tracker import MemoryReport

if TYPE_CHECKING:
    from harness.training import Task


class FlopCounter(TorchDispatchMode):
    """FLOPs of the ops run inside it that torch's FLOP formulas cover (matrix products and
    convolutions, forward and backward). Unlike torch's ``FlopCounterMode`` it neither hooks
    modules nor decomposes ops, so it adds no tensor the memory tracker would see."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


@dataclass(frozen=True)
class TaskCost:
    memory: MemoryReport  # the training peak, by category
    flops_per_sample: float  # FLOPs of one training step, per sample of the batch
    bytes_down: int  # the model's state the client receives
    bytes_up: int  # what it sends back


def estimate_task(build_task: Callable[[], Task], input_shape: tuple[int, ...], num_classes: int,
                  batch_size: int, optimizer: OptimizerConfig, steps: int = 2,
                  device: torch.device | str = "cpu") -> TaskCost:
    """Memory peak, FLOPs and bytes of ``steps`` training steps of ``build_task()`` at ``batch_size``."""
    from harness.training import measure_task, tensor_bytes

    device = torch.device(device)
    built = []

    def build() -> Task:
        built.append(build_task())
        return built[0]

    with FakeTensorMode(), device, FlopCounter() as counter:
        x = torch.randn(batch_size, *input_shape, device=device)
        y = torch.randint(0, num_classes, (batch_size,), device=device)
        memory = measure_task(build, x, y, optimizer, steps)
        task = built[0]
        down, up = tensor_bytes(task.model.state_dict()), tensor_bytes(task.upload(task.model))
    return TaskCost(memory, counter.total / (steps * batch_size), down, up)


def estimate_peak(build_task: Callable[[], Task], input_shape: tuple[int, ...], num_classes: int,
                  batch_size: int, optimizer: OptimizerConfig, steps: int = 2,
                  device: torch.device | str = "cpu") -> MemoryReport:
    """Peak of ``steps`` training steps of ``build_task()`` at ``batch_size``, by category."""
    return estimate_task(build_task, input_shape, num_classes, batch_size, optimizer, steps, device).memory
