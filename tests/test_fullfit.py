"""The full model made to fit: micro-batches with gradient accumulation, activation checkpointing."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from conftest import tiny_suite
from torch import nn

import baselines  # noqa: F401  (registration)
from harness.config import ConfigError, OptimizerConfig
from harness.data import Batches, DataBundle
from harness.engine import run_suite
from harness.estimate import FlopCounter, estimate_task
from harness.fleet import Device
from harness.methods import METHODS, TaskError, TaskSpec
from harness.models import ModelSpec, build_model
from harness.records import read_jsonl
from harness.training import Task, make_optimizer, measure_task, peak_batches, train_local, training_step

from helpers import SHAPE, context, method

OPT = OptimizerConfig()
FULL = TaskSpec("full")


def trained_once(model: nn.Module, spec: TaskSpec, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """``model`` after one SGD step of ``spec``'s training (a copy; the original is untouched)."""
    task = spec.trained(Task(copy.deepcopy(model)))
    training_step(task, make_optimizer(task.model, OPT), x, y)
    return task.model


def batch(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_micro_batches_give_the_large_batchs_update_without_batch_norm():
    """Σ (n_i / n) ∇ mean_i = ∇ mean: accumulating scaled micro-batch losses is one large batch."""
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 10, 1, 8), 1.0, lambda c: nn.Identity())
    x, y = batch(32, (1, 8, 8))
    whole = trained_once(model, FULL, x, y)
    for micro in (1, 5, 8, 16):  # 5 leaves a short last micro-batch
        accumulated = trained_once(model, TaskSpec("full", micro_batch=micro), x, y)
        for a, b in zip(whole.parameters(), accumulated.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_checkpointing_changes_no_number_of_the_training(name):
    """Recomputed activations are the same activations, and batch norm's running statistics are
    updated once per forward, not again when a block is recomputed."""
    shape = (1, 8, 8) if name == "cnn" else (3, 16, 16)
    torch.manual_seed(0)
    model = build_model(ModelSpec(name, 10, shape[0], shape[-1]), 0.25 if name == "resnet18" else 1.0)
    x, y = batch(16, shape)
    plain = trained_once(model, FULL, x, y)
    for k in range(1, model.num_blocks + 1):
        checkpointed = trained_once(model, TaskSpec("full", checkpointed=k), x, y)
        for (key, a), b in zip(plain.state_dict().items(), checkpointed.state_dict().values(), strict=True):
            assert torch.equal(a, b), (k, key)


@pytest.mark.parametrize(("name", "shape", "batch_size"), [
    ("cnn", (1, 8, 8), 32), ("resnet18", (3, 32, 32), 8), ("vgg11", (3, 32, 32), 8)])
@pytest.mark.parametrize("spec", [
    TaskSpec("full", micro_batch=4), TaskSpec("full", checkpointed=2), TaskSpec("full", micro_batch=2, checkpointed=3)])
def test_estimate_equals_measured_for_each_policy(name, shape, batch_size, spec):
    build = lambda: spec.trained(Task(build_model(ModelSpec(name, 10, shape[0], shape[-1]), 1.0)))  # noqa: E731
    estimate = estimate_task(build, shape, 10, batch_size, OPT).memory
    x, y = batch(batch_size, shape)
    assert measure_task(build, x, y, OPT, 2) == estimate


def test_the_estimate_runs_only_the_micro_batches_whose_memory_differs():
    """A batch of 32 in micro-batches of 3 is eleven (the last of 2); the estimate runs the first,
    the second and the last, and still gives the measured peak of all eleven and the FLOPs per
    sample of the whole batch."""
    model = lambda: build_model(ModelSpec("cnn", 10, 1, 8), 1.0)  # noqa: E731
    task = Task(model(), micro_batch=3)
    assert len(task.chunk_bounds(32)) == 11 and task.chunk_bounds(32)[-1] == (30, 32)
    assert task.chunk_bounds(31)[-1] == (27, 31)  # a single left-over sample joins the one before
    task.distinct_chunks_only = True
    assert task.chunk_bounds(32) == [(0, 3), (3, 6), (30, 32)]
    estimate = estimate_task(lambda: Task(model(), micro_batch=3), (1, 8, 8), 10, 32, OPT)
    x, y = batch(32, (1, 8, 8))
    assert measure_task(lambda: Task(model(), micro_batch=3), x, y, OPT, 2) == estimate.memory
    whole = estimate_task(lambda: Task(model()), (1, 8, 8), 10, 32, OPT)
    assert estimate.flops_per_sample == whole.flops_per_sample


def test_a_second_backward_recomputes_again_and_counts_batch_norm_once():
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 10, 1, 8), 1.0)
    model.checkpointed = 2
    x, y = batch(8, (1, 8, 8))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward(retain_graph=True)
    loss.backward()
    assert all(m.num_batches_tracked.item() == 1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.parametrize(("name", "splittable", "blocks"), [
    ("fedprox", True, 3), ("depthfl", True, 0), ("fjord", False, 0), ("neulite", False, 0), ("heterofl", True, 3)])
def test_any_method_is_offered_only_the_settings_its_task_allows(name, splittable, blocks):
    """FjORD draws a width per step and runs the model with other weights, NeuLite's mentor uses
    statistics of the whole batch: neither is split or recomputed; DepthFL's model has exits."""
    m = method(name)
    spec = m.memory_specs()[0]
    options = m.fitting_options(spec, [4], checkpoint=True)
    assert {(o.micro_batch, o.checkpointed) for o in options} == {
        (mb, k) for mb in ((0, 4) if splittable else (0,)) for k in range(blocks + 1)}
    assert all(m.estimate(o).peak > 0 for o in options)
    if not splittable:
        with pytest.raises(ConfigError, match="not a mean over samples"):
            dataclasses.replace(spec, micro_batch=4).trained(m.build_task(spec))


def test_checkpointing_costs_one_more_forward_of_its_blocks_and_micro_batches_none():
    m = method("checkpoint", context("resnet18", (3, 16, 16)))
    base = m.flops_per_sample(FULL)
    assert m.flops_per_sample(TaskSpec("full", micro_batch=2)) == base
    with torch._subclasses.fake_tensor.FakeTensorMode(), FlopCounter() as counter:
        model = m.ctx.build_model()
        x = torch.randn(8, 3, 16, 16)
        for block in model.blocks[:2]:
            x = block(x)
    forward_of_two = counter.total / 8
    assert m.flops_per_sample(TaskSpec("full", checkpointed=2)) == pytest.approx(base + forward_of_two, rel=1e-9)


def test_each_device_gets_the_cheapest_setting_that_fits():
    m = method("microbatch", context(batch=32), micro_batches=[16, 8, 4, 64])
    assert [s.label for s in m.memory_specs()] == ["full", "full mb=16", "full mb=8", "full mb=4"]
    need = {s.micro_batch: m.estimate(s).peak for s in m.memory_specs()}
    assert need[0] > need[16] > need[8] > need[4]
    assert m.choose(1, Device(1, need[0])) == FULL
    assert m.choose(1, Device(2, need[8] + 1)) == TaskSpec("full", micro_batch=8)
    refused = m.choose(1, Device(3, need[4] - 1))
    assert refused.spec == TaskSpec("full", micro_batch=4) and "mb=4" in refused.reason
    both = method("checkpoint", context(batch=32), micro_batches=[8])
    labels = [s.label for s in both.memory_specs()]
    assert labels == ["full", "full ckpt=1", "full ckpt=2", "full ckpt=3",
                      "full mb=8", "full mb=8 ckpt=1", "full mb=8 ckpt=2", "full mb=8 ckpt=3"]


def test_a_suite_records_each_clients_setting_and_measures_what_it_estimated(tmp_path, quiet):
    cfg = tiny_suite(rounds=2, batch_size=32, fleet={"low_mb": 0.3, "high_mb": 1.0},
                     methods=[{"method": "microbatch"}, {"method": "checkpoint", "micro_batches": [4]}],
                     measure={"clients": "all"})
    folder = run_suite(cfg, tmp_path, log=quiet)
    for run in ("microbatch-seed0", "checkpoint-seed0"):
        clients = read_jsonl(folder / run / "clients.jsonl")
        trained = [c for c in clients if c["status"] == "trained"]
        assert trained and all(c["memory"]["tensor"] == c["estimate"] for c in trained)
        settings = {(c.get("micro_batch", 0), c.get("checkpointed", 0)) for c in trained}
        assert len(settings) > 1, settings  # the fleet's spread gives devices different settings
        assert all(c["estimate"]["peak"] <= c["budget"] for c in trained)
        assert all(c["estimate"]["peak"] > c["budget"] for c in clients if c["status"] == "excluded")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "depthfl" else n
                                  for n in sorted(METHODS.names())])  # depthfl's takes half a minute
def test_every_step_starts_alike_so_the_peak_batches_give_the_peak(name):
    """The optimizer's state is made with the task and no step keeps anything for the next, so a
    client's steps all start from the same state, and a step peaks higher with a larger batch unless
    a smaller one is cut into a larger micro-batch (in 2s, 32 is all 2s but 5 is 2 + 3): one step at
    each of ``peak_batches`` has the peak, breakdown and all, of every sequence. For every method and
    every task it may give."""
    m = method(name, context(batch=32))
    for spec in m.memory_specs():
        def build(spec=spec):
            return spec.trained(m.build_task(spec))
        for sizes in [(32, 32), (32, 5, 32), (5, 32, 32, 5), (32, 17), (32, 31)]:
            kept = peak_batches(sizes, spec.micro_batch)
            assert estimate_task(build, SHAPE, 10, sizes, OPT).memory == \
                estimate_task(build, SHAPE, 10, kept, OPT).memory, (spec, sizes, kept)


def test_micro_batches_are_given_through_the_task_spec():
    """The estimate picks a client's measured batches from the spec's micro-batch: a task that sets
    its own is refused with one line."""
    task = Task(build_model(ModelSpec("cnn", 10, 1, 8)), micro_batch=4)
    with pytest.raises(ConfigError, match="sets its own micro_batch"):
        TaskSpec("full").trained(task)


def test_a_short_batch_is_measured_only_when_its_micro_batches_are_larger():
    assert peak_batches([32, 5]) == (32,) and peak_batches([20]) == (20,)
    assert peak_batches([32, 5], micro_batch=2) == (32, 5)  # 2s, against 2 + 3
    assert peak_batches([32, 6], micro_batch=2) == (32,)  # 2s, against 2 + 2 + 2
    assert peak_batches([33, 5], micro_batch=2) == (33,)  # 2s and a 3, against 2 + 3
    assert peak_batches([64, 37, 21], micro_batch=4) == (64, 37)  # 4s, against a 5 in 37 (and in 21)


def test_batch_norm_on_one_value_is_never_asked_for():
    """ResNet-34 on 8x8 images ends in 1x1 maps: a micro-batch of one cannot train there, so it is
    not offered; a micro-batch that would leave one sample joins it to the one before; a client
    whose last batch would be one sample leaves it out of the epoch, in training and estimate."""
    ctx = context("resnet34", (1, 8, 8), width=0.125, batch=16)
    m = method("microbatch", ctx, micro_batches=[5, 1])
    need = {s.micro_batch: m.need(s) for s in m.fitting_options(FULL, [5])}
    assert m.choose(1, Device(1, need[5])) == TaskSpec("full", micro_batch=5)  # 16 = 5 + 5 + 6
    refused = m.choose(1, Device(1, need[5] - 1))
    assert refused.spec == TaskSpec("full", micro_batch=5) and "mb=5" in refused.reason
    for _ in range(2):  # found once, kept: the second time costs no estimate
        with pytest.raises(ConfigError, match="mb=1 cannot be trained"):
            m.estimate(TaskSpec("full", micro_batch=1))
    assert sum(isinstance(c, TaskError) for c in m.ctx.estimator.costs.values()) == 1
    assert ctx.estimator.batch_sizes(17) == (16,) and ctx.estimator.batch_sizes(18) == (16,)
    assert ctx.estimator.batch_sizes(21, micro_batch=4) == (16, 5)  # 16 in 4s; 5 is 4 + 1, joined: a 5
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (17, 1, 8, 8), generator=g, dtype=torch.uint8)
    data = DataBundle("random", x, torch.arange(17) % 10, x, torch.arange(17) % 10, 10, (0.5,), (0.25,))
    batches = Batches(data, torch.arange(17), 16, torch.device("cpu"))
    assert len(batches) == 1 and [len(y) for _, y in batches] == [16]
    result = train_local(lambda: m.build_task(FULL), batches, 2, OPT, 2, measure_rss=False)
    estimate = estimate_task(lambda: m.build_task(FULL), (1, 8, 8), 10, (16, 16), OPT).memory
    assert result.steps == 2 and result.memory["tensor"] == estimate.to_record()
