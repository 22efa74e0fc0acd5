"""A task's cost, predicted without real compute: its training memory, FLOPs and bytes exchanged.

The task is built and trained one step per batch size a client is measured at under
``FakeTensorMode`` (no data, no arithmetic, no real memory) with the same tracker and the same
training step as the real run, so the memory estimate counts exactly what the measurement counts.
The same pass counts the steps' FLOPs (torch's FLOP formulas: convolutions and matrix products,
forward and backward) and the sizes of what the client downloads (its model's state) and uploads,
for the device time model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from harness.config import OptimizerConfig
from harness.memory import MemoryReport
from harness.training import Task, measure_steps, tensor_bytes


class FlopCounter(TorchDispatchMode):
    """FLOPs of the ops run inside it that torch's FLOP formulas cover (matrix products and
    convolutions, forward and backward). Unlike torch's ``FlopCounterMode`` it neither hooks
    modules nor decomposes ops, so it adds no tensor the memory tracker would see."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never compiled: spare every op torch's wrapper that keeps Dynamo out

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
    overhead: int = 0  # the GPU allocator's bytes beyond the peak, measured (``measure.gate = "allocator"``)

    @property
    def need(self) -> int:
        """The bytes the memory gate compares with a device's budget."""
        return self.memory.peak + self.overhead


def estimate_task(build_task: Callable[[], Task], input_shape: tuple[int, ...], num_classes: int,
                  batch_size: int | Sequence[int], optimizer: OptimizerConfig, steps: int = 1,
                  device: torch.device | str = "cpu") -> TaskCost:
    """Memory peak, FLOPs and bytes of ``steps`` training steps of ``build_task()`` at ``batch_size``,
    or of one step per batch size of a sequence (a client's short batches)."""
    device = torch.device(device)
    built = []

    def build() -> Task:
        task = build_task()
        task.distinct_chunks_only = True  # exact, and a step of many micro-batches costs three
        built.append(task)
        return task

    sizes = [batch_size] * steps if isinstance(batch_size, int) else list(batch_size)
    with FakeTensorMode(), device, FlopCounter() as counter:
        # each batch made when its step starts, the previous one dropped, as a client's loader does
        batches = ((torch.randn(b, *input_shape, device=device), torch.randint(0, num_classes, (b,), device=device))
                   for b in sizes)
        memory = measure_steps(build, batches, optimizer)
        task = built[0]
        down, up = tensor_bytes(task.model.state_dict()), tensor_bytes(task.upload(task.model))
    trained = sum(end - start for size in sizes for start, end in task.chunk_bounds(size))
    return TaskCost(memory, counter.total / max(1, trained), down, up)
