"""Benchmarks (``tox -e test -- -m benchmark --benchmark-enable``): what measurement costs a
client's local training, and what an estimate costs. Each pair runs in one session, so their
ratio is meaningful on that machine."""

import pytest
import torch

from harness.config import OptimizerConfig
from harness.data import Batches, random_bundle
from harness.estimate import estimate_task
from harness.models import ModelSpec, build_model
from harness.training import Task, train_local

pytestmark = pytest.mark.benchmark

OPT = OptimizerConfig()


@pytest.mark.parametrize("steps_to_measure", [0, 2], ids=["unmeasured", "measured"])
def test_local_training_with_and_without_measurement(benchmark, steps_to_measure):
    """One client epoch of 20 steps of ResNet-18 at width 0.25; compare the two means."""
    benchmark.group = "local training: 20 steps, resnet18 x0.25, batch 32"
    data = random_bundle(640, (3, 32, 32))
    spec = ModelSpec("resnet18", 10, 3, 32)

    def run():
        torch.manual_seed(0)
        batches = Batches(data, torch.arange(640), 32, torch.device("cpu"))
        return train_local(lambda: Task(build_model(spec, 0.25)), batches, 1, OPT, steps_to_measure, measure_rss=True)

    result = benchmark.pedantic(run, rounds=5, warmup_rounds=1)
    assert result.steps == 20


@pytest.mark.parametrize("model", ["cnn", "resnet18", "vgg16"])
def test_estimate_cost(benchmark, model):
    benchmark.group = "estimate: two fake training steps, batch 64"
    spec = ModelSpec(model, 10, 3, 32)
    report = benchmark.pedantic(
        lambda: estimate_task(lambda: Task(build_model(spec)), (3, 32, 32), 10, 64, OPT).memory, rounds=3)
    assert report.peak > 0
