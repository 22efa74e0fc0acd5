"""The process- and device-level memory sources: ``rss``, ``cuda`` and ``nvml``.

Each is present only where it means something: ``cuda`` and ``nvml`` on a GPU, ``rss`` where the
operating system reports a resettable high-water mark (Linux). An absent source is left out of the
record, never written as zero.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
from collections.abc import Callable

import torch

STATUS = "/proc/self/status"
STATM = "/proc/self/statm"
CLEAR_REFS = "/proc/self/clear_refs"


# The rss source runs twice for each client: procfs is read and written through bare descriptors,
# since Python's file objects cost several times the kernel's own work here.
def _read_proc(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:  # to the end: a long Groups line can push the status file's VmHWM past any fixed size
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _write_proc(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


@functools.cache
def rss_supported() -> bool:
    return sys.platform.startswith("linux") and all(map(os.path.exists, (STATUS, STATM, CLEAR_REFS)))


def reset_rss_peak() -> None:
    """Reset the process's RSS high-water mark to its RSS now (Linux ``clear_refs`` 5)."""
    _write_proc(CLEAR_REFS, b"5")


def rss_now() -> int:
    return int(_read_proc(STATM).split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rss_peak() -> int:
    """The high-water mark since the reset (VmHWM). Not ``getrusage``'s ``ru_maxrss``, which keeps
    the mark of the image a process was exec'd from (a spawned worker's parent) past any reset."""
    line = next(row for row in _read_proc(STATUS).splitlines() if row.startswith(b"VmHWM:"))
    return int(line.split()[1]) * 1024


NVML_INTERVAL_S = 0.005  # how often the NVML sampler reads the GPU's memory in use


class _Nvml:
    """nvidia-ml-py's view of a GPU: bytes in use as the driver sees them. This process's own use
    where the driver lists it (not in every container's PID namespace), else the whole device's."""

    def __init__(self, index: int) -> None:
        import pynvml

        pynvml.nvmlInit()
        self._pynvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._last_own = self._own()
        self.process = self._last_own is not None  # one scope for the whole task

    def _own(self) -> int | None:
        for proc in self._pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                return int(proc.usedGpuMemory)
        return None

    def used(self) -> int:
        if self.process:  # a process briefly missing from the list keeps its last reading
            own = self._own()
            self._last_own = own if own is not None else self._last_own
            return self._last_own
        return int(self._pynvml.nvmlDeviceGetMemoryInfo(self._handle).used)


def nvml_for(device: torch.device) -> _Nvml | None:
    if device.type != "cuda":
        return None
    try:
        return _Nvml(device.index if device.index is not None else torch.cuda.current_device())
    except Exception:
        return None


class PeakSampler:
    """The peak of ``read()`` sampled in a background thread every ``interval`` seconds, plus a read
    at the start and at the stop; a start/end delta would miss whatever was freed in between."""

    def __init__(self, read: Callable[[], int], interval: float = NVML_INTERVAL_S) -> None:
        self._read, self.interval = read, interval
        self.start = self.peak = read()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="nvml-sampler", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.peak = max(self.peak, self._read())
            except Exception:  # a driver error ends the sampling, not the training
                return

    def stop(self) -> dict[str, int]:
        self._done.set()
        self._thread.join()
        try:
            self.peak = max(self.peak, self._read())
        except Exception:
            pass
        return {"peak": self.peak, "start": self.start, "delta": self.peak - self.start,
                "interval_us": round(self.interval * 1e6)}


class Probes:
    """Starts the sources before a client's task is built and reads their peaks at ``stop()``.

    On a GPU the allocator's cache is emptied first, so that NVML's reading starts from what is
    really held and the task's own reservations show in its peak."""

    def __init__(self, device: torch.device, rss: bool) -> None:
        self.device = device
        self._records: dict[str, dict[str, int]] | None = None
        self._rss_start: int | None = None
        if rss and rss_supported():
            reset_rss_peak()
            self._rss_start = rss_now()
        nvml = nvml_for(device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            self._cuda_start = torch.cuda.memory_allocated(device)
        self._nvml = PeakSampler(nvml.used) if nvml is not None else None
        self._nvml_process = int(nvml.process) if nvml is not None else 0

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
            peak = torch.cuda.max_memory_allocated(self.device)
            records["cuda"] = {"allocated_peak": peak, "reserved_peak": torch.cuda.max_memory_reserved(self.device),
                               "allocated_start": self._cuda_start, "task_peak": peak - self._cuda_start}
        if self._nvml is not None:
            records["nvml"] = {**self._nvml.stop(), "process": self._nvml_process}
        self._records = records

    def records(self, tensor_peak: int | None = None) -> dict[str, dict[str, int]]:
        """The sources' records; given the tracker's peak, ``cuda`` also names the allocator's
        ``overhead`` over it (cuDNN workspaces, block rounding, fragmentation)."""
        self.stop()
        records = dict(self._records or {})
        if "cuda" in records and tensor_peak is not None:
            records["cuda"] = {**records["cuda"], "overhead": records["cuda"]["task_peak"] - tensor_peak}
        return records


def start_probes(device: torch.device, rss: bool = True) -> Probes:
    return Probes(device, rss)
