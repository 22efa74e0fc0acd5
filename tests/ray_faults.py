"""FedAvg variants for the Ray tests: one that kills its own process once, where a test says (a
worker dying mid-task), one whose clients hold 256 MB for a moment (a large peak), one that
notes each estimate it is asked for, and one that notes when each run starts and ends.

Loaded on Ray workers through ``FL_HARNESS_PLUGINS=ray_faults`` (tests/test_ray.py)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import is_fake

from baselines.fedavg import FedAvg, FedAvgParams
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


def hog_loss(model, x, y):
    """Cross-entropy, after holding 256 MB on the batch's device for a moment (the first step's peak)."""
    hog = torch.ones(64 * 2**20, device=x.device)
    del hog
    return F.cross_entropy(model(x), y)


@register_method("hog")
class Hog(FedAvg):
    """FedAvg whose clients also hold 256 MB in each step: a client with a large peak in every
    memory source, to show that the next client on the same worker does not inherit it."""

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = super().client_task(rnd, device, spec)
        task.loss = hog_loss
        return task


@dataclass
class CountedParams(FedAvgParams):
    log: str = ""  # a line is appended here each time a task is built for an estimate


@register_method("counted")
class Counted(FedAvg):
    """FedAvg that notes in ``log`` each task built under fake tensors: each estimate computed."""

    Params = CountedParams

    def build_task(self, spec: TaskSpec) -> Task:
        task = super().build_task(spec)
        if is_fake(next(task.model.parameters())):
            with open(self.params.log, "a") as log:
                log.write(f"{spec.label}\n")
        return task


@dataclass
class SpannedParams(FedAvgParams):
    log: str = ""  # "start"/"end" lines with the time, one pair per run
    slow_estimate_s: float = 0.0  # each estimate takes this long: runs of other seeds wait on the board
    driver_pid: int = 0  # the driver makes each run's method too, for its checks: not a start


@register_method("spanned")
class Spanned(FedAvg):
    """FedAvg whose runs note their start (the method made by the run's worker) and end (the last
    aggregation)."""

    Params = SpannedParams

    def __init__(self, params: SpannedParams, ctx: Any) -> None:
        super().__init__(params, ctx)
        if os.getpid() != params.driver_pid:
            self._note("start")

    def _note(self, what: str) -> None:
        with open(self.params.log, "a") as log:
            log.write(f"{what} {time.time()}\n")

    def build_task(self, spec: TaskSpec) -> Task:
        task = super().build_task(spec)
        if is_fake(next(task.model.parameters())):
            time.sleep(self.params.slow_estimate_s)
        return task

    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        super().aggregate(rnd, results)
        if rnd == self.ctx.rounds:
            self._note("end")
