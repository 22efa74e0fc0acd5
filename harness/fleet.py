"""The device fleet: memory budgets (MB in configs, bytes everywhere else), compute throughput and
link speeds (GFLOP/s and Mbit/s in configs, FLOP/s and bytes/s everywhere else), seeded or from a
trace."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from harness.config import ConfigError, FleetConfig
from harness.registry import Registry

MB = 1024 * 1024
GFLOPS = 1e9  # FLOP/s per GFLOP/s
MBITS = 1e6 / 8  # bytes/s per Mbit/s
# The slowest device the time model takes (GFLOP/s, Mbit/s), and the most: beyond these a device
# time overflows or stops meaning anything (5e-324 GFLOP/s made a round last inf seconds).
SPEED_RANGE = (1e-6, 1e9)


def speed_ok(value: float) -> bool:
    return SPEED_RANGE[0] <= value <= SPEED_RANGE[1]


@dataclass(frozen=True)
class Device:
    id: int
    budget: int  # bytes of training memory the device can give
    flops: float = 10 * GFLOPS  # sustained training throughput, FLOP/s (the device time model)
    up: float = 10 * MBITS  # uplink, bytes/s
    down: float = 50 * MBITS  # downlink, bytes/s

    def to_record(self) -> dict[str, float]:
        return {"id": self.id, "budget": self.budget, "flops": self.flops, "up": self.up, "down": self.down}


FleetBuilder = Callable[[FleetConfig, torch.Generator], list[Device]]
FLEETS: Registry[FleetBuilder] = Registry("fleet distribution")


def _pick(values: list[float], n: int, g: torch.Generator) -> list[float]:
    """``n`` draws from ``values`` (no draw at all for one value, so budgets stay as they were)."""
    if len(values) == 1:
        return values * n
    return [values[i] for i in torch.randint(len(values), (n,), generator=g).tolist()]


def _size(cfg: FleetConfig) -> int:
    """The number of devices a seeded distribution draws."""
    if cfg.devices < 1:
        raise ConfigError(f"fleet.devices must be at least 1, got {cfg.devices}")
    return cfg.devices


def _devices(budgets_mb: torch.Tensor, cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    """Devices with the given budgets; compute and link speeds drawn from the config's values."""
    if not torch.isfinite(budgets_mb).all():
        raise ConfigError(f"fleet: the {cfg.distribution} distribution drew a budget that is not a finite number "
                          "of MB; check its parameters")
    n = len(budgets_mb)
    speeds = zip(_pick(cfg.gflops, n, g), _pick(cfg.up_mbps, n, g), _pick(cfg.down_mbps, n, g), strict=True)
    return [Device(i, int(mb * MB), gflops * GFLOPS, up * MBITS, down * MBITS)
            for i, (mb, (gflops, up, down)) in enumerate(zip(budgets_mb.tolist(), speeds, strict=True))]


def _low_high(cfg: FleetConfig) -> None:
    if not 0 < cfg.low_mb <= cfg.high_mb:
        raise ConfigError(f"fleet: need 0 < low_mb <= high_mb, got {cfg.low_mb} and {cfg.high_mb}")


@FLEETS.register("uniform")
def uniform(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    _low_high(cfg)
    budgets = cfg.low_mb + (cfg.high_mb - cfg.low_mb) * torch.rand(_size(cfg), generator=g, dtype=torch.float64)
    return _devices(budgets, cfg, g)


@FLEETS.register("even")
def even(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    """The uniform distribution's quantiles (low_mb to high_mb, evenly spaced) in an order drawn per
    seed: every seed's fleet has the same mix of budgets, so a small fleet is never, by chance,
    short of devices at the top of the range."""
    _low_high(cfg)
    spaced = torch.linspace(cfg.low_mb, cfg.high_mb, _size(cfg), dtype=torch.float64)
    return _devices(spaced[torch.randperm(cfg.devices, generator=g)], cfg, g)


@FLEETS.register("tiers")
def tiers(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    if not cfg.tiers_mb or not all(0 < t < math.inf for t in cfg.tiers_mb):
        raise ConfigError(f"fleet.tiers_mb: budgets must be positive, got {cfg.tiers_mb}")
    weights_ok = len(cfg.tier_weights) == len(cfg.tiers_mb) and all(0 <= w < math.inf for w in cfg.tier_weights) \
        and sum(cfg.tier_weights) > 0
    if cfg.tier_weights and not weights_ok:
        raise ConfigError(f"fleet.tier_weights: one finite, non-negative weight per tier, not all zero; got "
                          f"{cfg.tier_weights}")
    weights = torch.tensor(cfg.tier_weights or [1.0] * len(cfg.tiers_mb), dtype=torch.float64)
    picks = torch.multinomial(weights, _size(cfg), replacement=True, generator=g)
    return _devices(torch.tensor(cfg.tiers_mb, dtype=torch.float64)[picks], cfg, g)


@FLEETS.register("lognormal")
def lognormal(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    if not (cfg.median_mb > 0 and cfg.sigma >= 0):
        raise ConfigError(f"fleet: need median_mb > 0 and sigma >= 0, got {cfg.median_mb}, {cfg.sigma}")
    normal = torch.randn(_size(cfg), generator=g, dtype=torch.float64)
    return _devices(cfg.median_mb * torch.exp(cfg.sigma * normal), cfg, g)


TRACE_COLUMNS = "device_id,memory_mb[,gflops[,up_mbps[,down_mbps]]]"
TRACE_NAMES = ("device_id", "memory_mb", "gflops", "up_mbps", "down_mbps")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@FLEETS.register("trace")
def trace(cfg: FleetConfig, g: torch.Generator) -> list[Device]:
    """``device_id,memory_mb[,gflops[,up_mbps[,down_mbps]]]`` per line (missing speeds: the config's
    first value); a header line is allowed."""
    if not cfg.trace:
        raise ConfigError("fleet.trace: give the CSV file of device budgets")
    path = Path(cfg.trace).expanduser()
    if not path.is_file():
        raise ConfigError(f"fleet.trace: {path} does not exist")
    defaults = [cfg.gflops[0], cfg.up_mbps[0], cfg.down_mbps[0]]
    devices = []
    with path.open(newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if line_no == 1 and "speed" in (c.strip() for c in row):
                raise ConfigError(f"fleet.trace: {path}: the third column is now gflops (GFLOP/s), not a "
                                  f"relative speed; columns: {TRACE_COLUMNS}")
            if not row or row[0].strip().startswith("#") or (line_no == 1 and not _is_number(row[0])):
                continue  # a comment, or the header line
            if len(row) < 2:
                raise ConfigError(f"fleet.trace: {path}:{line_no}: {len(row)} column(s); expected {TRACE_COLUMNS}")
            cells = [row[0], row[1], *(v if v.strip() else d for v, d in zip(row[2:] + [""] * 3, defaults))]
            values = []
            for column, (name, parse, cell) in enumerate(zip(TRACE_NAMES, (int, float, float, float, float), cells)):
                try:
                    values.append(parse(cell))
                except ValueError:  # which column, never what it holds (a trace may be any readable file)
                    raise ConfigError(f"fleet.trace: {path}:{line_no}: column {column + 1} ({name}) is not "
                                      f"{'an integer' if column == 0 else 'a number'}; columns: {TRACE_COLUMNS}") \
                        from None
            ident, memory, gflops, up, down = values
            if ident < 0 or not 0 < memory * MB < math.inf or int(memory * MB) == 0 \
                    or not all(speed_ok(v) for v in (gflops, up, down)):  # speed_ok: finite too
                raise ConfigError(f"fleet.trace: {path}:{line_no}: device ids must be >= 0, memory positive and "
                                  f"speeds in [{SPEED_RANGE[0]:g}, {SPEED_RANGE[1]:g}] (GFLOP/s, Mbit/s)")
            devices.append(Device(ident, int(memory * MB), gflops * GFLOPS, up * MBITS, down * MBITS))
    if not devices:
        raise ConfigError(f"fleet.trace: {path} lists no device")
    if len({d.id for d in devices}) != len(devices):
        raise ConfigError(f"fleet.trace: {path} repeats a device id")
    return devices


def build_fleet(cfg: FleetConfig, seed: int) -> list[Device]:
    """The fleet for one seed; the same seed always gives the same budgets."""
    return FLEETS[cfg.distribution](cfg, torch.Generator().manual_seed(seed))
