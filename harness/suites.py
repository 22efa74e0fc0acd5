"""Loading a suite for a run, one floor above the registries: ``harness.config`` parses the file
and checks its values; here every name is checked against the registries (data sets, models,
partitions, fleet distributions, executors, methods and their parameters) and the fleet is built
for seed 0. Importing this module fills the registries (the Ray executor; the built-in methods and
``FL_HARNESS_PLUGINS`` when a suite is loaded), so ``run``, ``memory --suite``, ``overhead``,
``scaling`` and a Python caller all load suites the same way, with no step of their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import harness.ray_executor  # noqa: F401  registers the "ray" executor and client trainer
from harness.config import ConfigError, FleetConfig, SuiteConfig, parse_suite, read_suite
from harness.data import DATASETS, PARTITIONS
from harness.engine import EXECUTORS
from harness.fleet import FLEETS, SPEED_RANGE, build_fleet, speed_ok
from harness.methods import METHODS
from harness.models import MODELS
from harness.plugins import load_plugins


def load_suite(path: str | Path, overrides: list[str] = ()) -> SuiteConfig:
    """Read a suite file, apply overrides, check everything that can be checked before training."""
    return suite_from_dict(read_suite(path, overrides))


def suite_from_dict(raw: dict[str, Any]) -> SuiteConfig:
    suite = parse_suite(raw)
    check_names(suite)
    return suite


def _known(name: str, registry: Any, key: str, what: str) -> None:
    if name not in registry:
        raise ConfigError(f"{key}: unknown {what} {name!r}; allowed: {', '.join(registry.names())}")


def check_names(suite: SuiteConfig) -> None:
    """Every name against its registry, each method entry's parameters against its method, and the
    fleet built for seed 0 (the built-in methods and ``FL_HARNESS_PLUGINS`` are imported first:
    a plugin may register any of these names)."""
    load_plugins()
    _known(suite.data.name, DATASETS, "data.name", "data set")
    _known(suite.model.name, MODELS, "model.name", "model")
    _known(suite.data.partition, PARTITIONS, "data.partition", "partition")
    _known(suite.fleet.distribution, FLEETS, "fleet.distribution", "distribution")
    devices = validate_fleet(suite.fleet)
    if suite.clients_per_round > devices:
        raise ConfigError(f"clients_per_round ({suite.clients_per_round}) exceeds the fleet's {devices} devices")
    _known(suite.executor, EXECUTORS, "executor", "executor")
    for i, entry in enumerate(suite.methods):
        _known(entry.method, METHODS, f"methods[{i}].method", "method")
        METHODS[entry.method].parse_params(entry.params, f"methods[{i}] ({entry.label})")


def validate_fleet(fleet: FleetConfig) -> int:
    """The device speeds the time model takes; then a build for seed 0, in which each distribution
    checks its own parameters, a plugin's as the built-in ones. Returns the fleet's size."""
    for key in ("gflops", "up_mbps", "down_mbps"):
        values = getattr(fleet, key)
        if not (values and all(speed_ok(v) for v in values)):
            raise ConfigError(f"fleet.{key}: give values in [{SPEED_RANGE[0]:g}, {SPEED_RANGE[1]:g}], got {values}")
    return len(build_fleet(fleet, 0))
