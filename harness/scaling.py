"""What Ray buys and costs (``python -m harness scaling``): a suite with its runs one after another
in this process, then as Ray tasks, one after the other so that the ratio is meaningful on that
machine; and the fixed cost Ray adds to each task it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from harness.config import SuiteConfig
from harness.overhead import timed_suite
from harness.ray_executor import connect
from harness.summary import COLUMNS, summary_table


@dataclass(frozen=True)
class Timed:
    executor: str
    seconds: float
    accuracy: dict[str, str]  # headline accuracy per label: the same records, whichever way they ran


def timed(cfg: SuiteConfig) -> Timed:
    seconds, table = timed_suite(cfg, lambda folder: summary_table(folder)[0])
    return Timed(cfg.executor, seconds, dict(zip(table["Label"], table[COLUMNS[1]], strict=True)))


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
    """The suite's runs locally and as Ray tasks (clients in their run's process both times), then
    Ray's per-task cost. Ray is started before the timing, as a cluster would be."""
    cfg = replace(cfg, ray=replace(cfg.ray, client_workers=0))
    connect(cfg.ray)
    return [timed(replace(cfg, executor="local")), timed(replace(cfg, executor="ray"))], empty_task_ms(cfg)
