"""What the harness costs: a suite's FedAvg run through the harness against the same workload in a
bare PyTorch loop built from the project's own data pipeline, model, optimizer, aggregation and
evaluation (``python -m harness overhead``). Both run in one process, one after the other, so
their ratio is meaningful on that machine."""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

import torch

from harness import clients, engine, methods, training
from harness.clients import client_batches
from harness.config import MethodEntry, SuiteConfig
from harness.data import Batches, load_data, partition
from harness.engine import (
    Run,
    evaluates,
    resolve_device,
    run_name,
    run_suite,
    suite_model_spec,
)
from harness.fleet import build_fleet
from harness.methods import weighted_average
from harness.models import build_model
from harness.planning import sample
from harness.progress import counted
from harness.records import RunWriter, read_jsonl
from harness.seeds import derived_seed
from harness.training import Task, evaluate, make_optimizer, round_optimizer, training_step

T = TypeVar("T")


# Where a harness run's time goes: (part, owner, function, leaf). Each part's time excludes the
# parts it calls, and nothing inside a leaf is split off (an estimate's fake steps are the estimate's).
PARTS: tuple[tuple[str, Any, str, bool], ...] = (
    ("rounds: planning, aggregation, round records", Run, "round", False),
    ("estimates (the memory gate)", methods, "estimate_task", True),
    ("clients: probes, optimizer, batches, state copies", clients, "train_local", False),
    ("clients: building each task under the tracker", training, "build_tracked", True),
    ("clients: measured steps", training, "measured_step", True),
    ("clients: untracked steps", training, "training_step", True),
    ("evaluation", engine, "evaluate", True),
    ("records", RunWriter, "append_round", True),
    ("checkpoints", RunWriter, "save_checkpoint", True),
)
OUTSIDE = "outside rounds: data, fleet, methods, manifests"


class PartTimer:
    """Seconds and calls of the ``PARTS`` during a run, each exclusive of the parts it calls."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self._stack: list[list[Any]] = []  # [leaf, seconds of the parts it called]

    def wrap(self, label: str, func: Callable[..., T], leaf: bool) -> Callable[..., T]:
        def timed(*args: Any, **kwargs: Any) -> T:
            if self._stack and self._stack[-1][0]:
                return func(*args, **kwargs)
            self._stack.append([leaf, 0.0])
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                self.seconds[label] += spent - self._stack.pop()[1]
                self.calls[label] += 1
                if self._stack:
                    self._stack[-1][1] += spent
        return timed

    @contextmanager
    def timing(self) -> Iterator[None]:
        with ExitStack() as patches:
            for label, owner, name, leaf in PARTS:
                patches.enter_context(mock.patch.object(owner, name, self.wrap(label, getattr(owner, name), leaf)))
            yield

    def table(self, total: float) -> list[tuple[str, float, int]]:
        """(part, seconds, calls), the time outside every part included, in ``PARTS`` order."""
        rows = [(label, self.seconds[label], self.calls[label]) for label, *_ in PARTS]
        return [(OUTSIDE, total - sum(self.seconds.values()), 1), *rows]


@dataclass(frozen=True)
class Timing:
    harness_s: float
    bare_s: float
    harness_accuracy: float  # the same workload gives the same model: a check that it is the same
    bare_accuracy: float
    parts: list[tuple[str, float, int]] = field(default_factory=list)  # the best harness run's, by part
    pairs: list[tuple[float, float]] = field(default_factory=list)  # (harness, bare) seconds, run after run

    @property
    def ratio(self) -> float:
        return self.harness_s / self.bare_s

    @property
    def pair_ratios(self) -> list[float]:
        """Each harness run over the bare run right after it: a slow spell of the machine tends to
        hit both of a pair, so their spread shows how far one ratio can be trusted."""
        return [h / b for h, b in self.pairs]


def bare_fedavg(cfg: SuiteConfig, seed: int) -> tuple[float, float]:
    """Seconds and final accuracy of ``cfg.rounds`` rounds of FedAvg as a plain loop: the same
    data, partition, clients per round, local epochs, batches and evaluated rounds; no
    estimate, measurement, records or checkpoint."""
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    data = load_data(cfg.data)
    devices = len(build_fleet(cfg.fleet, seed))
    parts = partition(data.train_y, devices, cfg.data, seed)
    spec = suite_model_spec(cfg, data)
    torch.manual_seed(derived_seed(seed, 0))
    model = build_model(spec, cfg.model.width)
    test = Batches(data, torch.arange(len(data.test_y)), cfg.eval_batch_size, device, train=False)
    for rnd in range(1, cfg.rounds + 1):
        chosen = sorted(sample(list(range(devices)), cfg.clients_per_round, seed, rnd))
        states, weights = [], []
        for position in chosen:
            local = build_model(spec, cfg.model.width).to(device)
            local.load_state_dict(model.state_dict(keep_vars=True))  # as the methods copy the server's model
            task = Task(local.train())
            optimizer = make_optimizer(local, round_optimizer(cfg.optimizer, rnd, cfg.rounds))
            batches = client_batches(cfg, data, parts[position], device, seed, rnd, position)
            for _ in range(cfg.local_epochs):
                for x, y in batches:
                    float(training_step(task, optimizer, x, y))  # the loss is read, as the harness does
            states.append({k: v.detach().to("cpu") for k, v in local.state_dict().items()})
            weights.append(len(parts[position]))
        model.load_state_dict(weighted_average(states, weights))
        if evaluates(cfg, rnd):
            accuracy, _ = evaluate(model, test)
    return time.perf_counter() - start, accuracy


def timed_suite(cfg: SuiteConfig, read: Callable[[Path], T]) -> tuple[float, T]:
    """Seconds of ``run_suite(cfg)`` into a temporary folder, and what ``read`` takes from its records."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        folder = run_suite(cfg, out, log=lambda *_: None, bar=False)
        seconds = time.perf_counter() - start
        return seconds, read(folder)


def harness_fedavg(cfg: SuiteConfig, seed: int) -> tuple[float, float, list[tuple[str, float, int]]]:
    """Seconds and final accuracy of the same FedAvg run through ``run_suite``, measurement and
    records on, and its time by part."""
    timer = PartTimer()
    with timer.timing():
        seconds, accuracy = timed_suite(
            cfg, lambda out: read_jsonl(out / run_name("fedavg", seed) / "rounds.jsonl")[-1]["accuracy"])
    return seconds, accuracy, timer.table(seconds)


def compare(cfg: SuiteConfig, repeats: int = 1) -> Timing:
    """The suite's FedAvg (one seed), through the harness and bare, ``repeats`` times each
    alternately; the best time of each (the least disturbed by other work on the machine)."""
    seed = cfg.seeds[0]
    cfg = replace(cfg, seeds=[seed], methods=[MethodEntry("fedavg", "fedavg")], executor="local",
                  ray=replace(cfg.ray, client_workers=0))  # the bare loop is one process
    harness_runs, bare_runs = [], []
    for _ in counted(range(repeats), "repeats (the harness, then the bare loop)"):
        harness_runs.append(harness_fedavg(cfg, seed))
        bare_runs.append(bare_fedavg(cfg, seed))
    (harness_s, harness_acc, parts), (bare_s, bare_acc) = min(harness_runs), min(bare_runs)
    pairs = [(h[0], b[0]) for h, b in zip(harness_runs, bare_runs)]
    return Timing(harness_s, bare_s, harness_acc, bare_acc, parts, pairs)
