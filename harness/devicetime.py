"""The device time model: what a client's round costs on its device, not on the simulating host.

Compute time is the client's training FLOPs (torch's FLOP counter, counted once per task with the
estimate, times samples and epochs) over the device's sustained FLOP/s; communication time is the
bytes it receives and sends over its downlink and uplink. A synchronous round lasts as long as its
slowest participant, or until the deadline once a client has been dropped for missing it.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.estimate import TaskCost
from harness.fleet import Device


@dataclass(frozen=True)
class DeviceTime:
    flops: float  # the client's training FLOPs this round
    compute: float  # seconds on the device
    comm: float  # seconds on the link, down and up

    @property
    def total(self) -> float:
        return self.compute + self.comm

    def to_record(self) -> dict[str, float]:
        return {"flops": self.flops, "compute_time": self.compute, "comm_time": self.comm,
                "device_time": self.total}


def client_time(device: Device, cost: TaskCost, flops_per_sample: float, samples: int, epochs: int) -> DeviceTime:
    flops = flops_per_sample * samples * epochs
    return DeviceTime(flops, flops / device.flops, cost.bytes_down / device.down + cost.bytes_up / device.up)


def round_device_time(participants: list[float], deadline: float, dropped: int) -> float:
    """Seconds of a synchronous round on the devices: the slowest participant's, or the deadline
    when the server stopped waiting for dropped clients."""
    slowest = max(participants, default=0.0)
    return max(slowest, deadline) if dropped else slowest
