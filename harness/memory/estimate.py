"""The memory estimate: a task's training peak, predicted without real compute.

The task is built and trained for the measured number of steps under ``FakeTensorMode`` (no data,
no arithmetic, no real memory) with the same tracker and the same training step as the real run, so
the estimate counts exactly what the measurement counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from harness.config import OptimizerConfig
from harness.memory.tracker import MemoryReport, TensorTracker


def estimate_peak(build_task: Callable[[], object], input_shape: tuple[int, ...], num_classes: int,
                  batch_size: int, optimizer: OptimizerConfig, steps: int = 2,
                  device: torch.device | str = "cpu") -> MemoryReport:
    """Peak of ``steps`` training steps of ``build_task()`` at ``batch_size``, by category."""
    from harness.training import make_optimizer, measured_step

    device = torch.device(device)
    with FakeTensorMode(), device:
        task = build_task()
        task.model.train()
        opt = make_optimizer(task.model, optimizer)
        tracker = TensorTracker()
        tracker.register_model(task.model)
        x = torch.randn(batch_size, *input_shape, device=device)
        y = torch.randint(0, num_classes, (batch_size,), device=device)
        loss = None
        for _ in range(steps):
            loss = measured_step(tracker, task, opt, x, y)
        del loss
    return tracker.report()
