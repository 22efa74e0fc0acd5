"""Shared fixtures: tiny, fast suite configs on seeded synthetic data."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from harness.config import SuiteConfig
from harness.plugins import load_plugins
from harness.records import read_jsonl
from harness.suites import suite_from_dict

load_plugins()

REPO = Path(__file__).resolve().parent.parent
SHARED_CIFAR = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.xz"

TINY: dict[str, Any] = {
    "name": "tiny",
    "rounds": 3,
    "clients_per_round": 4,
    "local_epochs": 1,
    "batch_size": 16,
    "seeds": [0],
    "device": "cpu",
    "data": {"name": "synthetic", "synthetic_samples": 400, "partition": "iid"},
    "model": {"name": "cnn", "width": 0.25},
    "fleet": {"devices": 6, "distribution": "uniform", "low_mb": 0.2, "high_mb": 2.0},
    "methods": [{"method": "fedavg"}],
}


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_raw(**over: Any) -> dict[str, Any]:
    return merge(TINY, over)


def tiny_suite(**over: Any) -> SuiteConfig:
    return suite_from_dict(tiny_raw(**over))


class Lines(list):
    """A log function that keeps the lines it is given (and keeps test output clean)."""

    def __call__(self, line: str) -> None:
        self.append(line)


@pytest.fixture(autouse=True)
def two_threads(request):
    """Tests train tiny models, where intra-op threads beyond two only add synchronisation: on a
    16-core GPU host the fast run was slower than on this two-core machine. Benchmarks keep the
    machine's threads."""
    if request.node.get_closest_marker("benchmark"):
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, 2))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def quiet() -> Lines:
    return Lines()


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory) -> Path:
    """The shared CIFAR-10 (JPEG) copy, unpacked once per session; skips when it is absent."""
    if not SHARED_CIFAR.exists():
        pytest.skip(f"the shared CIFAR-10 copy is absent ({SHARED_CIFAR.name}); see shared/data/README.md")
    target = tmp_path_factory.mktemp("cifar10-jpeg")
    with tarfile.open(SHARED_CIFAR) as tar:
        tar.extractall(target, filter="data")
    return next(p.parent for p in target.rglob("train") if p.is_dir())


def write_toml(path, rounds: int) -> None:
    path.write_text(f"""
name = "killme"
rounds = {rounds}
clients_per_round = 4
batch_size = 16
seeds = [0]
device = "cpu"
[data]
name = "synthetic"
synthetic_samples = 400
[model]
name = "cnn"
width = 0.25
[fleet]
devices = 6
low_mb = 0.2
high_mb = 2.0
[[methods]]
method = "exclusive"
""")


def start(args, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "harness", "run", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_rounds(path, n, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(read_jsonl(path)) >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run never reached round {n}: {proc.communicate()}")
