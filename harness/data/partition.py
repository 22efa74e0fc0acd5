"""Seeded splits of the training set across clients: iid, Dirichlet label skew, shards."""

from __future__ import annotations

from collections.abc import Callable

import torch

from harness.config import DataConfig
from harness.registry import Registry

Partitioner = Callable[[torch.Tensor, int, DataConfig, torch.Generator], list[torch.Tensor]]
PARTITIONS: Registry[Partitioner] = Registry("partition")


class PartitionError(ValueError):
    """A partition that cannot give every client data."""


@PARTITIONS.register("iid")
def iid(labels: torch.Tensor, clients: int, cfg: DataConfig, g: torch.Generator) -> list[torch.Tensor]:
    if len(labels) < clients:
        raise PartitionError(f"{len(labels)} samples cannot be split across {clients} clients")
    perm = torch.randperm(len(labels), generator=g)
    return [chunk.sort().values for chunk in perm.tensor_split(clients)]


MAX_DRAWS = 1000


def dirichlet_proportions(alpha: float, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` proportions ~ Dir(alpha), exact at any alpha > 0: a Gamma(alpha) draw is
    Gamma(alpha + 1) * U^(1/alpha), so its logarithm is computed without underflow (at alpha = 1e-6
    U^(1/alpha) is below any float's range) and normalised in log space."""
    boosted = torch._standard_gamma(torch.full((n,), alpha + 1.0, dtype=torch.float64), generator=g)
    log_gamma = boosted.log() + torch.rand(n, generator=g, dtype=torch.float64).log() / alpha
    return torch.softmax(log_gamma, 0)


@PARTITIONS.register("dirichlet")
def dirichlet(labels: torch.Tensor, clients: int, cfg: DataConfig, g: torch.Generator) -> list[torch.Tensor]:
    """Each class is spread over clients by proportions ~ Dir(alpha); redrawn (at most ``MAX_DRAWS``
    times) until every client holds at least ``cfg.min_samples`` samples (Hsu et al. 2019)."""
    if clients * cfg.min_samples > len(labels):
        raise PartitionError(f"{clients} clients of at least {cfg.min_samples} samples need "
                             f"{clients * cfg.min_samples} samples; the training set has {len(labels)}")
    num_classes = int(labels.max()) + 1
    for _ in range(MAX_DRAWS):
        parts: list[list[torch.Tensor]] = [[] for _ in range(clients)]
        for c in range(num_classes):
            idx = torch.nonzero(labels == c).flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            proportions = dirichlet_proportions(cfg.alpha, clients, g)
            cuts = (proportions.cumsum(0) * len(idx)).round().long()[:-1].tolist()
            for client, chunk in enumerate(idx.tensor_split(cuts)):
                parts[client].append(chunk)
        result = [torch.cat(p).sort().values for p in parts]
        if min(len(r) for r in result) >= cfg.min_samples:
            return result
    raise PartitionError(f"Dirichlet(alpha={cfg.alpha}) left a client with fewer than "
                         f"{cfg.min_samples} samples in {MAX_DRAWS} draws; raise alpha, lower "
                         "data.min_samples or use fewer devices")


@PARTITIONS.register("shards")
def shards(labels: torch.Tensor, clients: int, cfg: DataConfig, g: torch.Generator) -> list[torch.Tensor]:
    """Sort by label, cut into ``clients * shards_per_client`` shards, deal them out (McMahan et al.)."""
    total = clients * cfg.shards_per_client
    if len(labels) < total:
        raise PartitionError(f"{len(labels)} samples cannot make {total} shards")
    order = torch.sort(labels, stable=True).indices
    pieces = order.tensor_split(total)
    deal = torch.randperm(total, generator=g).view(clients, cfg.shards_per_client)
    return [torch.cat([pieces[i] for i in row.tolist()]).sort().values for row in deal]


def partition(labels: torch.Tensor, clients: int, cfg: DataConfig, seed: int) -> list[torch.Tensor]:
    return PARTITIONS[cfg.partition](labels, clients, cfg, torch.Generator().manual_seed(seed))


def partition_report(labels: torch.Tensor, parts: list[torch.Tensor], num_classes: int) -> list[dict]:
    """Per client: its sample count and label histogram (goes into the run manifest)."""
    return [
        {"client": i, "samples": len(p), "labels": torch.bincount(labels[p], minlength=num_classes).tolist()}
        for i, p in enumerate(parts)
    ]
