"""Training memory: measured (``tensor``, ``rss``, ``cuda``, ``nvml``) and estimated."""

from harness.memory import sources
from harness.memory.estimate import TaskCost, estimate_task
from harness.memory.tracker import CATEGORIES, MemoryReport, TensorTracker

__all__ = ["CATEGORIES", "MemoryReport", "TaskCost", "TensorTracker", "estimate_task", "sources"]
