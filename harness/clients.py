"""Where a run trains a round's clients: one after another in this process, or on Ray worker actors.

A client's training depends only on its job (run seed, round, position), never on the process that
runs it, so every executor gives the same records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from harness.config import SuiteConfig
from harness.data import Batches, DataBundle
from harness.fleet import Device
from harness.methods import ClientResult, Method, TaskSpec
from harness.progress import Log
from harness.registry import Registry
from harness.seeds import derived_seed, seed_torch
from harness.training import round_optimizer, train_local

SLOW_CLIENT_S = 5.0  # a client training this long gets its own progress line


def client_batches(cfg: SuiteConfig, data: DataBundle, indices: torch.Tensor, device: torch.device, seed: int,
                   rnd: int, position: int) -> Batches:
    """The client's local batches in round ``rnd``: shuffled and augmented by its own seed."""
    g = torch.Generator().manual_seed(derived_seed(seed, rnd, position, 2))
    return Batches(data, indices, cfg.batch_size, device, cfg.data.augment, generator=g)


@dataclass(frozen=True, eq=False)
class ClientJob:
    """One client's training in a round: all a worker needs besides the suite's data and the method."""

    seed: int
    rnd: int
    position: int
    device: Device
    spec: TaskSpec
    indices: torch.Tensor  # the client's training samples
    context: str  # names the client in errors and progress lines
    measure: bool = True  # train under the tracker (``measure.clients``: else its task's shape was measured)


@dataclass(frozen=True)
class ClientFailure:
    """A client whose training was lost (its worker died); recorded as ``failed`` with the reason."""

    reason: str


def train_client(cfg: SuiteConfig, data: DataBundle, method: Method, job: ClientJob,
                 device: torch.device) -> ClientResult:
    """Train one client: seeded by (run seed, round, position) alone, so any process gives the same result."""
    seed_torch(derived_seed(job.seed, job.rnd, job.position, 1), device)
    batches = client_batches(cfg, data, job.indices, device, job.seed, job.rnd, job.position)
    optimizer = round_optimizer(cfg.optimizer, job.rnd, cfg.rounds)
    local = train_local(lambda: method.trained_task(job.rnd, job.device, job.spec), batches, cfg.local_epochs,
                        optimizer, cfg.measure.steps, cfg.measure.rss, context=job.context, measure=job.measure)
    return ClientResult(job.device, job.spec, local)


class Clients(Protocol):
    """Where a run trains a round's clients; results come back in the jobs' order."""

    def train(self, method: Method, jobs: list[ClientJob]) -> list[ClientResult | ClientFailure]: ...

    def close(self) -> None: ...


def log_if_slow(log: Log, job: ClientJob, result: ClientResult, done: int, of: int) -> None:
    """Long rounds show their progress: a line for each client that trained for a while."""
    if result.local.train_time >= SLOW_CLIENT_S:
        log(f"{job.context}: client {done}/{of} ({job.spec.label}) trained in {result.local.train_time:.1f} s")


class LocalClients:
    """Trains a round's clients one after another in this process."""

    def __init__(self, cfg: SuiteConfig, data: DataBundle, device: torch.device, log: Log) -> None:
        self.cfg, self.data, self.device, self.log = cfg, data, device, log

    def train(self, method: Method, jobs: list[ClientJob]) -> list[ClientResult | ClientFailure]:
        results = []
        for job in jobs:
            results.append(train_client(self.cfg, self.data, method, job, self.device))
            log_if_slow(self.log, job, results[-1], len(results), len(jobs))
        return results

    def close(self) -> None:
        pass


# Where a run trains its clients, by name: "local" (this process) here; harness.ray_executor
# registers "ray" (worker actors, ``ray.client_workers``), which every trainer reaches through
# the ``Clients`` interface alone.
CLIENT_TRAINERS: Registry[Callable[[SuiteConfig, DataBundle, torch.device, Log], Clients]] = \
    Registry("client trainer")
CLIENT_TRAINERS.register("local")(LocalClients)


def client_trainer(cfg: SuiteConfig, data: DataBundle, device: torch.device, log: Log) -> Clients:
    """Where a run trains its clients: in this process, or on Ray worker actors (``ray.client_workers``)."""
    return CLIENT_TRAINERS["ray" if cfg.ray.client_workers else "local"](cfg, data, device, log)
