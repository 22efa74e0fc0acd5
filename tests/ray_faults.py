"""A FedAvg that kills its own process once, where a test says: how a Ray worker dies mid-task.

Loaded on Ray workers through ``FL_HARNESS_PLUGINS=ray_faults`` (tests/test_ray.py)."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from baselines.fedavg import FedAvg
from harness.fleet import Device
from harness.methods import ClientResult, TaskSpec, register_method
from harness.training import Task


@dataclass
class DieOnceParams:
    marker: str = ""  # the file that says the process has died already (so a retry lives)
    client_device: int = -1  # die while building this device's task, in the round below
    aggregate_round: int = 0  # die while aggregating this round (in the run's own process)
    round: int = 1
    weighted: bool = True


def die_once(marker: str) -> None:
    path = Path(marker)
    if not path.exists():
        path.touch()
        os.kill(os.getpid(), signal.SIGKILL)


@register_method("die-once")
class DieOnce(FedAvg):
    Params = DieOnceParams

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        if rnd == self.params.round and device.id == self.params.client_device:
            die_once(self.params.marker)
        return super().client_task(rnd, device, spec)

    def aggregate(self, rnd: int, results: list[ClientResult]) -> Any:
        if rnd == self.params.aggregate_round:
            die_once(self.params.marker)
        return super().aggregate(rnd, results)
