"""DepthFL as its reference does it: bottleneck exits, FedDyn, the distillation ramp, the ensemble."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from baselines.depthfl import BottleneckExit, DepthFLLoss, ramp
from harness.config import ConfigError, OptimizerConfig
from harness.fleet import Device
from harness.methods import TaskSpec
from harness.models import ClassifierHead
from harness.training import measure_task

from helpers import SHAPE, UNLIMITED, context, method, uploaded


def test_shallow_exits_are_the_reference_bottleneck_and_the_deepest_is_the_head():
    m = method("depthfl", context("resnet18", (3, 32, 32), width=0.125))
    heads = m.model.heads
    assert [type(h) for h in heads] == [BottleneckExit] * 3 + [ClassifierHead]
    # exit i: attention on block i's channels, then one strided separable conv per later block
    for i, head in enumerate(heads[:3]):
        gate = head.attention.body[0]
        assert (gate[0].in_channels, gate[0].groups, gate[0].stride) == ((8, 16, 32)[i], (8, 16, 32)[i], (2, 2))
        chain = [(c[0].in_channels, c[5].out_channels, c[0].stride[0]) for c in head.convs]
        assert chain == [(8, 16, 2), (16, 32, 2), (32, 64, 2)][i:]
        assert [type(layer) for layer in head.convs[0]] == [nn.Conv2d, nn.Conv2d, nn.BatchNorm2d, nn.ReLU] * 2
        assert head.head.fc.in_features == 64
    logits = m.model(torch.randn(2, 3, 32, 32))
    assert [z.shape for z in logits] == [(2, 10)] * 4


def test_a_depth_k_client_holds_k_blocks_and_their_exits():
    m = method("depthfl")
    task = m.client_task(1, UNLIMITED, TaskSpec("depth", 2))
    assert len(task.model.blocks) == 2 and len(task.model.heads) == 2
    assert set(task.model.state_dict()) < set(m.model.state_dict())


@pytest.mark.parametrize("depth", [1, 3])
def test_estimate_equals_measured_with_feddyn_state(depth):
    m = method("depthfl")
    spec = TaskSpec("depth", depth)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    measured = measure_task(lambda: m.client_task(1, UNLIMITED, spec), x, y, OptimizerConfig(), 2)
    estimate = m.estimate(spec)
    assert measured == estimate
    held = sum(p.nbytes for p in m.build_net(depth).parameters())
    assert estimate.categories["state"] == 2 * held  # the global weights' copy and the correction
    assert method("depthfl", feddyn=False).estimate(spec).categories["state"] == 0


def test_distillation_ramp_is_the_references():
    assert ramp(1, 300) == pytest.approx(math.exp(-5))
    assert ramp(151, 300) == pytest.approx(math.exp(-1.25))
    assert ramp(301, 300) == ramp(1000, 300) == 1.0
    assert ramp(1, 0) == 1.0
    m = method("depthfl", context(rounds=20), rampup=0.5)  # ramps over 10 of the 20 rounds
    assert m.client_task(6, UNLIMITED, TaskSpec("depth", 3)).loss.distill_weight == pytest.approx(math.exp(-1.25))


def test_client_loss_is_cross_entropy_distillation_and_feddyn_by_hand():
    m = method("depthfl", alpha=0.2)
    g = torch.Generator().manual_seed(3)
    correction = {n: torch.randn(p.shape, generator=g) for n, p in m.build_net(2).named_parameters()}
    m.corrections[7] = correction
    task = m.client_task(1, Device(7, 2**40), TaskSpec("depth", 2))
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    x, y = torch.randn(8, *SHAPE), torch.arange(8)
    task.loss(task.model, x, y).backward()
    got = {n: p.grad.clone() for n, p in task.model.named_parameters()}
    task.model.zero_grad()
    z1, z2 = task.model(x)
    w = task.loss.distill_weight
    kl = (F.kl_div(F.log_softmax(z1, 1), F.softmax(z2.detach(), 1), reduction="batchmean")
          + F.kl_div(F.log_softmax(z2, 1), F.softmax(z1.detach(), 1), reduction="batchmean"))
    (F.cross_entropy(z1, y) + F.cross_entropy(z2, y) + w * kl).backward()
    global_state = m.model.state_dict()
    for name, p in task.model.named_parameters():
        want = p.grad + 0.2 * (p.detach() - global_state[name]) - correction[name]
        assert torch.allclose(got[name], want, atol=1e-5), name


def test_server_applies_feddyn_per_entry_over_the_clients_that_hold_it():
    m = method("depthfl", context(fleet=[Device(i, 2**40) for i in range(5)]), alpha=0.1)
    before = {k: v.clone() for k, v in m.model.state_dict().items()}
    shallow = {k: before[k] + 1.0 if before[k].is_floating_point() else before[k] for k in m.build_net(1).state_dict()}
    deep = {k: before[k] + 3.0 if before[k].is_floating_point() else before[k] for k in m.build_net(2).state_dict()}
    m.aggregate(1, [uploaded(0, TaskSpec("depth", 1), shallow), uploaded(1, TaskSpec("depth", 2), deep)])
    after = m.model.state_dict()
    names = dict(m.model.named_parameters())
    for key, old in before.items():
        if key not in deep:  # held by nobody: unchanged
            assert torch.equal(after[key], old), key
            continue
        holders = 2 if key in shallow else 1
        mean = old + (2.0 if holders == 2 else 3.0)
        if key in names:  # h = -alpha * n / N * (mean - old); new = mean - h / alpha
            h = -0.1 * holders / 5 * (mean - old)
            assert torch.allclose(m.h[key], h) and torch.allclose(after[key], mean - h / 0.1), key
        elif old.is_floating_point():  # running statistics: the plain mean
            assert torch.allclose(after[key], mean), key
    first = next(iter(names))  # each client's correction: -alpha * (w_trained - w_global)
    assert torch.allclose(m.corrections[0][first], torch.full_like(before[first], -0.1))
    assert torch.allclose(m.corrections[1][first], torch.full_like(before[first], -0.3))
    assert set(m.corrections[0]) == {k for k in shallow if k in names}


def test_ensemble_is_the_mean_of_every_exits_logits_and_state_resumes():
    m = method("depthfl")
    x = torch.randn(4, *SHAPE)
    models = m.eval_models()
    assert list(models) == ["ensemble", "deepest"]  # the reference reports the ensemble
    with torch.no_grad():
        logits = m.model(x)
        assert torch.allclose(models["ensemble"](x), sum(logits) / len(logits))
        assert torch.equal(models["deepest"](x), logits[-1])
    m.h, m.corrections = {"k": torch.ones(2)}, {3: {"k": torch.zeros(2)}}
    fresh = method("depthfl")
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.h["k"], m.h["k"]) and torch.equal(fresh.corrections[3]["k"], torch.zeros(2))


def test_loss_sums_exit_cross_entropies_without_distillation_at_weight_zero():
    loss = DepthFLLoss(0.0, 1.0, None)
    m = method("depthfl")
    x, y = torch.randn(4, *SHAPE), torch.arange(4)
    with torch.no_grad():
        assert torch.allclose(loss(m.model, x, y), sum(F.cross_entropy(z, y) for z in m.model(x)))


def test_depths_beyond_the_model_are_a_config_error():
    with pytest.raises(ConfigError, match=r"depths \[4\] exceed the 3 blocks of cnn"):
        method("depthfl", depths=[4])
