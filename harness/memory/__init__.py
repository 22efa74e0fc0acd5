"""Training memory, measured (``tensor``, ``rss``, ``cuda``, ``nvml``); the estimate, which runs the
training step under fake tensors, sits above training in ``harness.estimate``."""

from harness.memory import sources
from harness.memory.tracker import CATEGORIES, MemoryReport, TensorTracker

__all__ = ["CATEGORIES", "MemoryReport", "TensorTracker", "sources"]
