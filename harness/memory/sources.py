"""The process- and device-level memory sources: ``rss``, ``cuda`` and ``nvml``.

Each is present only where it means something: ``cuda`` and ``nvml`` on a GPU, ``rss`` where the
operating system reports a resettable high-water mark (Linux). An absent source is left out of the
record, never written as zero.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

STATUS = Path("/proc/self/status")
CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss_supported() -> bool:
    return sys.platform.startswith("linux") and STATUS.exists() and CLEAR_REFS.exists()


def reset_rss_peak() -> int:
    """Reset the process's RSS high-water mark (Linux ``clear_refs`` 5); return current RSS bytes."""
    CLEAR_REFS.write_text("5")
    return _status_kib("VmRSS") * 1024


def rss_peak() -> int:
    return _status_kib("VmHWM") * 1024


class _Nvml:
    """nvidia-ml-py's view of a GPU: used bytes as the driver sees them, all processes included."""

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._pynvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)

    def used(self) -> int:
        return int(self._pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)


def nvml_for(device: torch.device) -> _Nvml | None:
    if device.type != "cuda":
        return None
    try:
        return _Nvml(device.index if device.index is not None else torch.cuda.current_device())
    except Exception:
        return None


class Probes:
    """Starts the sources before a client's task is built and reads their peaks at ``stop()``."""

    def __init__(self, device: torch.device, rss: bool) -> None:
        self.device = device
        self._records: dict[str, dict[str, int]] | None = None
        self._rss_start = reset_rss_peak() if rss and rss_supported() else None
        self._nvml = nvml_for(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            self._cuda_start = torch.cuda.memory_allocated(device)
        if self._nvml is not None:
            self._nvml_start = self._nvml.used()

    def rebase(self) -> None:
        """Restart the peaks, keeping the starts: what was built since the start and is still held
        counts, transients of building (a full model cut down to a stage) do not."""
        if self._rss_start is not None:
            reset_rss_peak()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def stop(self) -> None:
        if self._records is not None:
            return
        records: dict[str, dict[str, int]] = {}
        if self._rss_start is not None:
            peak = rss_peak()
            records["rss"] = {"peak": peak, "start": self._rss_start, "delta": peak - self._rss_start}
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            records["cuda"] = {
                "allocated_peak": torch.cuda.max_memory_allocated(self.device),
                "reserved_peak": torch.cuda.max_memory_reserved(self.device),
                "allocated_start": self._cuda_start,
            }
            records["cuda"]["delta"] = records["cuda"]["allocated_peak"] - self._cuda_start
        if self._nvml is not None:
            used = self._nvml.used()
            records["nvml"] = {"used": used, "start": self._nvml_start, "delta": used - self._nvml_start}
        self._records = records

    def records(self) -> dict[str, dict[str, int]]:
        self.stop()
        return self._records or {}


def start_probes(device: torch.device, rss: bool = True) -> Probes:
    return Probes(device, rss)
