"""Method contexts and methods for unit tests: the CNN on 8x8 inputs, a CPU estimator, one device."""

from __future__ import annotations

from typing import Any

import torch

from harness.config import OptimizerConfig
from harness.fleet import Device
from harness.methods import METHODS, ClientResult, Estimator, Method, MethodContext, TaskSpec
from harness.models import ModelSpec
from harness.records import read_jsonl
from harness.training import LocalResult

SHAPE = (1, 8, 8)
UNLIMITED = Device(0, 2**40)


def context(model: str = "cnn", shape: tuple[int, ...] = SHAPE, width: float = 1.0, batch: int = 8,
            fleet: list[Device] | None = None, labels: dict[int, list[int]] | None = None,
            rounds: int = 1) -> MethodContext:
    estimator = Estimator(shape, 10, batch, OptimizerConfig(), 1, torch.device("cpu"))
    spec = ModelSpec(model, 10, shape[0], shape[-1])
    labels = {0: [5] * 9 + [0]} if labels is None else labels  # device 0 holds no sample of class 9
    return MethodContext(spec, width, shape, 10, fleet or [UNLIMITED], 0, torch.device("cpu"), estimator, labels,
                         rounds)


def method(name: str, ctx: MethodContext | None = None, **params: Any) -> Method:
    cls = METHODS[name]
    return cls(cls.parse_params(params), ctx or context())


def uploaded(device: int, spec: TaskSpec, state: dict[str, torch.Tensor], samples: int = 10) -> ClientResult:
    """A client's result as ``aggregate`` sees it, with the given upload."""
    return ClientResult(Device(device, 2**40), spec, LocalResult(state, samples, 1, 0.0, 0.0, 0, 0))


TIMING = {"train_time", "round_time", "wall_time"}


def records(folder) -> tuple[list[dict], list[dict]]:
    """A run folder's round and client records."""
    return read_jsonl(folder / "rounds.jsonl"), read_jsonl(folder / "clients.jsonl")


def without_times(rows: list[dict]) -> list[dict]:
    """Records without what differs between two identical runs: wall times and the process RSS."""
    out = []
    for row in rows:
        row = {k: v for k, v in row.items() if k not in TIMING}
        if row.get("memory"):
            row["memory"] = {k: v for k, v in row["memory"].items() if k != "rss"}
        out.append(row)
    return out
