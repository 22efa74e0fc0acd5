"""What Ray buys and costs (``python -m harness scaling``): a suite run locally, then with its runs
as Ray tasks, in one process one after the other so that the ratio is meaningful on that machine;
and the fixed cost Ray adds to each task it runs."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace

from harness.config import SuiteConfig
from harness.engine import run_suite
from harness.ray_executor import connect
from harness.summary import summary_rows


@dataclass(frozen=True)
class Timed:
    name: str
    seconds: float
    accuracy: dict[str, str]  # final accuracy per label: the same records, whichever way they ran


def timed_suite(name: str, cfg: SuiteConfig) -> Timed:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        folder = run_suite(cfg, out, log=lambda *_: None)
        seconds = time.perf_counter() - start
        rows = summary_rows(folder, [(e.label, f"{e.label}-seed{s}") for e in cfg.methods for s in cfg.seeds])
        return Timed(name, seconds, {row[0]: row[1] for row in rows})


def empty_task_ms(cfg: SuiteConfig, tasks: int = 200) -> float:
    """Mean wall time of an empty Ray task (submit, schedule, run, return) on warm workers: what
    each run or client task pays beyond its own work."""
    ray = connect(cfg.ray)
    noop = ray.remote(lambda: None).options(num_cpus=cfg.ray.num_cpus)
    ray.get([noop.remote() for _ in range(2 * int(ray.available_resources().get("CPU", 1)))])  # warm workers
    start = time.perf_counter()
    for _ in range(tasks):
        ray.get(noop.remote())
    return 1000 * (time.perf_counter() - start) / tasks


def compare(cfg: SuiteConfig) -> tuple[list[Timed], float]:
    """The suite locally and on Ray (runs as tasks), then Ray's per-task cost."""
    local = timed_suite("local", replace(cfg, executor="local"))
    spread = timed_suite("ray", replace(cfg, executor="ray"))
    return [local, spread], empty_task_ms(cfg)
