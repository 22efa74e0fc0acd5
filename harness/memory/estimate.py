"""The memory estimate: a task's training peak, predicted without real compute.

The task is built and trained for the measured number of steps under ``FakeTensorMode`` (no data,
no arithmetic, no real memory) with the same tracker and the same training step as the real run, so
the estimate counts exactly what the measurement counts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from harness.config import OptimizerConfig
from harness.memory.tracker import MemoryReport

if TYPE_CHECKING:
    from harness.training import Task


def estimate_peak(build_task: Callable[[], Task], input_shape: tuple[int, ...], num_classes: int,
                  batch_size: int, optimizer: OptimizerConfig, steps: int = 2,
                  device: torch.device | str = "cpu") -> MemoryReport:
    """Peak of ``steps`` training steps of ``build_task()`` at ``batch_size``, by category."""
    from harness.training import measure_task

    device = torch.device(device)
    with FakeTensorMode(), device:
        x = torch.randn(batch_size, *input_shape, device=device)
        y = torch.randint(0, num_classes, (batch_size,), device=device)
        return measure_task(build_task, x, y, optimizer, steps)
