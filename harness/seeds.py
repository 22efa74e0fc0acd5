"""Seeds and kernels that make a run repeat bit for bit, and resume as if it had never stopped."""

from __future__ import annotations

import numpy as np
import torch


def derived_seed(*parts: int) -> int:
    """A seed for (run seed, round, client, ...): runs resume and repeat bit for bit."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_torch(seed: int, device: torch.device) -> None:
    """Seed torch's generators for work on ``device``. On a CPU only the CPU's: ``torch.manual_seed``
    also queues a seed for each accelerator not yet started, formatting a stack trace for each
    (0.12 ms here, paid by every client)."""
    if device.type == "cpu":
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)


def deterministic_kernels() -> None:
    """cuDNN's autotuner picks kernels by timing, so runs would differ; fix them."""
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
