"""The device fleet: memory budgets (MB in configs, bytes everywhere else), seeded or from a trace."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config import ConfigError, FleetConfig
from harness.registry import Registry

MB = 1024 * 1024


@dataclass(frozen=True)
class Device:
    id: int
    budget: int  # bytes of training memory the device can give
    speed: float = 1.0  # relative compute speed (recorded; the local executor does not simulate it)


FleetBuilder = Callable[[FleetConfig, torch.Generator], list[Device]]
FLEETS: Registry[FleetBuilder] = Registry("fleet distribution")


def _devices(budgets_mb: torch.Tensor) -> list[Device]:
    return [Device(i, int(mb * MB)) for i, mb in enumerate(budgets_mb.tolist())]


@FLEETS.register("uniform")
def uniform(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    return _devices(cfg.low_mb + (cfg.high_mb - cfg.low_mb) * torch.rand(cfg.devices, generator=g, dtype=torch.float64))


@FLEETS.register("tiers")
def tiers(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    weights = torch.tensor(cfg.tier_weights or [1.0] * len(cfg.tiers_mb), dtype=torch.float64)
    picks = torch.multinomial(weights, cfg.devices, replacement=True, generator=g)
    return _devices(torch.tensor(cfg.tiers_mb, dtype=torch.float64)[picks])


@FLEETS.register("lognormal")
def lognormal(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    normal = torch.randn(cfg.devices, generator=g, dtype=torch.float64)
    return _devices(cfg.median_mb * torch.exp(cfg.sigma * normal))


@FLEETS.register("trace")
def trace(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    """``device_id,memory_mb[,speed]`` per line; a header line is allowed."""
    path = Path(cfg.trace).expanduser()
    if not path.is_file():
        raise ConfigError(f"fleet.trace: {path} does not exist")
    devices = []
    with path.open(newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or row[0].strip().startswith("#") or (line_no == 1 and not row[0].strip().isdigit()):
                continue
            try:
                speed = float(row[2]) if len(row) > 2 and row[2].strip() else 1.0
                device = Device(int(row[0]), int(float(row[1]) * MB), speed)
            except (ValueError, IndexError):
                raise ConfigError(f"fleet.trace: {path}:{line_no}: expected device_id,memory_mb[,speed], "
                                  f"got {','.join(row)!r}") from None
            if device.budget <= 0 or speed <= 0:
                raise ConfigError(f"fleet.trace: {path}:{line_no}: memory and speed must be positive")
            devices.append(device)
    if not devices:
        raise ConfigError(f"fleet.trace: {path} lists no device")
    if len({d.id for d in devices}) != len(devices):
        raise ConfigError(f"fleet.trace: {path} repeats a device id")
    return devices


def build_fleet(cfg: FleetConfig, seed: int) -> list[Device]:
    """The fleet for one seed; the same seed always gives the same budgets."""
    return FLEETS[cfg.distribution](cfg, torch.Generator().manual_seed(seed))
