"""Training memory: measured (``tensor``, ``rss``, ``cuda``, ``nvml``) and estimated."""

from harness.memory import sources
from harness.memory.estimate import estimate_peak
from harness.memory.tracker import CATEGORIES, MemoryReport, TensorTracker

__all__ = ["CATEGORIES", "MemoryReport", "TensorTracker", "estimate_peak", "sources"]
