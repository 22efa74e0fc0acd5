"""The suite schema: typed dataclasses, read from TOML, with ``--set key=value`` overrides.

Validation is strict and happens before anything trains: an unknown key, a wrong type or a value out
of range raises one ``ConfigError`` that names the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal


class ConfigError(ValueError):
    """A suite file or override that cannot be run; the message names the key."""


@dataclass
class DataConfig:
    name: str = "digits"
    root: str = ""  # folder of cifar10/cifar100/imagefolder data
    download: bool = False  # let torchvision download cifar10/cifar100 into root
    partition: str = "dirichlet"  # a registered partition (harness.data.PARTITIONS): iid | dirichlet | shards
    alpha: float = 0.5  # Dirichlet concentration (smaller = more label skew)
    shards_per_client: int = 2
    min_samples: int = 2  # Dirichlet is redrawn until every client has this many samples
    augment: bool = False  # random crop (padding: an eighth of the side) + flip on tensors (CIFAR-style)
    image_size: int = 0  # imagefolder: resize to this square size; 0 keeps the files' size
    cache_dir: str = ""  # imagefolder tensor cache; default: <root>/.harness-cache
    synthetic_samples: int = 2000
    validation_fraction: float = 0.0  # > 0 holds out part of train as the evaluation set (tuning)


@dataclass
class ModelConfig:
    name: str = "cnn"
    width: float = 1.0


@dataclass
class FleetConfig:
    devices: int = 20
    distribution: str = "uniform"  # a registered one (harness.fleet.FLEETS): uniform | even | tiers | lognormal | trace
    low_mb: float = 1.0  # uniform, even
    high_mb: float = 8.0  # uniform, even
    tiers_mb: list[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])
    tier_weights: list[float] = field(default_factory=list)  # empty = equal
    median_mb: float = 4.0  # lognormal
    sigma: float = 0.5  # lognormal
    trace: str = ""  # CSV: device_id,memory_mb[,gflops[,up_mbps[,down_mbps]]]
    # The device time model (docs/device-time.md): sustained training throughput and link speeds;
    # several values: each device draws one (seeded). Defaults: a Raspberry-Pi-4-class CPU and
    # median mobile links.
    gflops: list[float] = field(default_factory=lambda: [10.0])
    up_mbps: list[float] = field(default_factory=lambda: [10.0])
    down_mbps: list[float] = field(default_factory=lambda: [50.0])


@dataclass
class OptimizerConfig:
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # lr over the run's rounds (the same for every method): "constant", or "cosine" from lr in the
    # first round towards 0 after the last (harness.training.LR_SCHEDULES)
    schedule: Literal["constant", "cosine"] = "constant"


@dataclass
class MeasureConfig:
    steps: int = 1  # steps measured at each batch size that can hold a client's peak (one suffices: all start alike)
    # Which trained clients run under the tracker: "shapes", the first client of each distinct task
    # shape (task, batch sizes) in a run, the others recorded with their task's estimate (equal to
    # the measurement to the byte on a CPU, docs/memory.md); or "all" of them (a measured step costs
    # about twice an untracked one). Either way training computes the same values.
    clients: Literal["shapes", "all"] = "shapes"
    rss: bool = True
    # What the memory gate holds against a budget: the estimated peak, or on a GPU the estimate plus
    # the caching allocator's overhead measured once per task kind (docs/memory.md)
    gate: Literal["estimate", "allocator"] = "estimate"


@dataclass
class ReportConfig:
    """What ``python -m reports`` reads from the suite's records unless told otherwise."""

    target: float = 0.9  # accuracy (a fraction) for time to target; --target overrides it


@dataclass
class RayConfig:
    """How ``executor = "ray"`` spreads a suite (docs/ray.md). Records do not depend on where a run
    or client executed, only on its torch threads (``num_cpus``): other thread counts sum in another
    order, so they differ in the last bits and, over many rounds, within the seed spread."""

    # "": RAY_ADDRESS's or a local `ray start` cluster, else a new Ray here; "auto" or HOST:PORT. From the
    # command line only (--set ray.address=...): a suite file that names a cluster is refused.
    address: str = ""
    num_cpus: float = 1.0  # CPUs reserved for each run (its torch threads: at least one)
    num_gpus: float = 0.0  # share of a GPU for each run: 0.25 puts four runs on one GPU
    client_workers: int = 0  # > 0: each run trains a round's clients on this many worker actors
    client_num_cpus: float = 1.0  # CPUs reserved for each client worker
    client_num_gpus: float = 0.0  # share of a GPU for each client worker
    client_retries: int = 1  # a client whose worker died is tried again this often, then recorded failed
    run_retries: int = 3  # a run whose worker died is resumed from its last complete round this often


@dataclass
class MethodEntry:
    """One method run of the suite: a registered method and its own parameters."""

    method: str
    label: str = ""  # unique name of the run; defaults to the method's name
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteConfig:
    name: str = "suite"
    rounds: int = 10
    clients_per_round: int = 10
    selection: Literal["eligible", "uniform"] = "eligible"
    local_epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 256
    eval_every: int = 1  # evaluate every k-th round and the last (a large test set costs a client's round)
    seeds: list[int] = field(default_factory=lambda: [0])
    deadline_s: float = 0.0  # round deadline in device seconds: slower clients are dropped (0: none)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    out: str = "runs"
    tensorboard: str = ""  # a folder: per-round scalars as TensorBoard event files there too ("": none)
    # "all": a client line per device per round; "selected": lines for the devices a round selected, the
    # rest as counts in the round line (a fleet of 10^5 devices: 32 MB a round of lines otherwise)
    client_lines: Literal["all", "selected"] = "all"
    executor: str = "local"  # where the runs execute: local | ray (docs/ray.md)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    methods: list[MethodEntry] = field(default_factory=list)


# ---- parsing -------------------------------------------------------------------------------

def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints widen to floats, nothing else converts."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{key}: {value!r} is not allowed; allowed: {_type_name(tp)}")
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return coerce(value, option, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {tp}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is Any:
        return value
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{key}: expected nothing, got {value!r}")
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return from_dict(tp, value, key)
    if not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f" in [{prefix}]" if prefix else ""
        raise ConfigError(f"unknown key {unknown[0]!r}{where}; allowed: {', '.join(names)}")
    kwargs = {k: coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"[{prefix or cls.__name__}]: {err}") from None


def _method_entries(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise ConfigError("methods: expected [[methods]] tables, each with a 'method' key")
    entries = []
    for i, table in enumerate(raw):
        table = dict(table)
        if "method" not in table:
            raise ConfigError(f"methods[{i}]: the 'method' key is missing")
        method, label = table.pop("method"), table.pop("label", "")
        entries.append({"method": method, "label": label, "params": table})
    return entries


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (numbers, booleans, lists), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply ``a.b.c=value`` to the raw TOML dict; ``methods.LABEL.key`` reaches a method."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected key=value")
    key, text = assignment.split("=", 1)
    parts = key.strip().split(".")
    value = parse_value(text.strip())
    if parts[0] == "methods" and len(parts) == 3:
        matches = [m for m in raw.get("methods", []) if (m.get("label") or m.get("method")) == parts[1]]
        if not matches:
            raise ConfigError(f"--set {key}: no method labelled {parts[1]!r} in the suite")
        for m in matches:
            m[parts[2]] = value
        return
    node = raw
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {part!r} is not a table")
    node[parts[-1]] = value


def read_suite(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """A suite file's raw table, with ``--set`` overrides applied (``harness.suites.load_suite``
    parses and checks it)."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"suite file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the suite file {path}: {getattr(err, 'strerror', None) or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    ray = raw.get("ray")
    if isinstance(ray, dict) and ray.get("address"):
        raise ConfigError(f"{path}: ray.address may not be set in a suite file (a shared file would join the "
                          "cluster it names and take that cluster's results into this process); give it on the "
                          "command line, --set ray.address=ADDR, or in RAY_ADDRESS")
    for assignment in overrides:
        apply_override(raw, assignment)
    return raw


def parse_suite(raw: dict[str, Any]) -> SuiteConfig:
    """The suite config from its raw table: keys and types, then values (ranges, cross-field rules,
    safe names). Names against the registries are ``harness.suites``' to check."""
    raw = dict(raw)
    raw["methods"] = _method_entries(raw.get("methods", []))
    suite = from_dict(SuiteConfig, raw)
    check_values(suite)
    return suite


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


MAX_LR = 100.0  # an SGD step size beyond any real use; 1e300 overflowed in round 1
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _check_name(value: str, key: str) -> None:
    """A suite name or method label becomes a folder name: one path component of safe characters."""
    _check(bool(SAFE_NAME.fullmatch(value)) and ".." not in value,
           f"{key}: {value!r} is not a safe folder name; use letters, digits, '.', '_' and '-' "
           "(starting with a letter or digit, at most 100 characters)")


def check_values(suite: SuiteConfig) -> None:
    """Ranges, cross-field rules and safe names: everything the schema alone can check."""
    for key in ("rounds", "clients_per_round", "local_epochs", "batch_size", "eval_batch_size", "eval_every"):
        _check(getattr(suite, key) >= 1, f"{key} must be at least 1, got {getattr(suite, key)}")
    _check_name(suite.name, "name")
    _check(bool(suite.seeds), "seeds: give at least one seed")
    _check(all(0 <= s < 2**32 for s in suite.seeds), f"seeds must be in [0, 2**32), got {suite.seeds}")
    _check(len(set(suite.seeds)) == len(suite.seeds), f"seeds: repeated seed in {suite.seeds}")
    _check(0 < suite.model.width <= 1, f"model.width must be in (0, 1], got {suite.model.width}")
    _check(0 < suite.data.alpha < math.inf, f"data.alpha must be positive and finite, got {suite.data.alpha}")
    _check(suite.data.shards_per_client >= 1, "data.shards_per_client must be at least 1")
    _check(0 <= suite.data.validation_fraction < 1, "data.validation_fraction must be in [0, 1)")
    _check(0 < suite.report.target <= 1, "report.target must be a fraction in (0, 1], e.g. 0.9")
    _check(suite.data.image_size >= 0, "data.image_size must be 0 or positive")
    _check(suite.data.synthetic_samples >= 50, "data.synthetic_samples must be at least 50 (a test split of 10 "
           f"and one sample a class), got {suite.data.synthetic_samples}")
    _check(_finite(suite.fleet.low_mb, suite.fleet.high_mb, suite.fleet.median_mb, suite.fleet.sigma,
                   *suite.fleet.tiers_mb), "fleet: budgets must be finite numbers of MB")
    _check(0 <= suite.deadline_s < math.inf, f"deadline_s must be >= 0 (0: no deadline), got {suite.deadline_s}")
    _check(0 < suite.optimizer.lr <= MAX_LR, f"optimizer.lr must be in (0, {MAX_LR:g}] (larger overflows the "
           f"weights in the first step), got {suite.optimizer.lr}")
    _check(0 <= suite.optimizer.momentum < 1, "optimizer.momentum must be in [0, 1)")
    _check(suite.optimizer.weight_decay >= 0, "optimizer.weight_decay must be >= 0")
    _check(suite.measure.steps >= 1, "measure.steps must be at least 1")
    validate_ray(suite.ray)
    _check(bool(suite.methods), "methods: the suite names no method; add a [[methods]] table")
    labels = set()
    for i, entry in enumerate(suite.methods):
        entry.label = entry.label or entry.method
        _check_name(entry.label, f"methods[{i}].label")
        _check(entry.label not in labels, f"methods[{i}]: label {entry.label!r} is used twice")
        labels.add(entry.label)


def validate_ray(ray: RayConfig) -> None:
    for key in ("num_cpus", "client_num_cpus"):
        _check(1 <= getattr(ray, key) < math.inf, f"ray.{key} must be at least 1 (a run or worker needs a "
               f"thread), got {getattr(ray, key)}")
    for key in ("num_gpus", "client_num_gpus"):
        _check(0 <= getattr(ray, key) < math.inf, f"ray.{key} must be >= 0, got {getattr(ray, key)}")
    for key in ("client_workers", "client_retries", "run_retries"):
        _check(getattr(ray, key) >= 0, f"ray.{key} must be >= 0, got {getattr(ray, key)}")


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def to_dict(suite: SuiteConfig) -> dict[str, Any]:
    return dataclasses.asdict(suite)
