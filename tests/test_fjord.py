"""FjORD as its reference does it: statistics per width, evaluation per width, in-place distillation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.fjord import leftmost_forward
from baselines.norms import OrderedBatchNorm2d
from harness.fleet import Device
from harness.methods import TaskSpec
from harness.training import Task, make_optimizer, measure_task, training_step

from helpers import SHAPE, UNLIMITED, context, method, uploaded

OPT_KEYS = ("running_mean", "running_var", "num_batches_tracked")


def norms(model) -> list[OrderedBatchNorm2d]:
    return [m for m in model.modules() if isinstance(m, OrderedBatchNorm2d)]


def test_every_norm_keeps_statistics_per_width_and_one_shared_affine():
    m = method("fjord")  # rates 1, 0.8, 0.6, 0.4, 0.2 of the CNN's 32, 64, 128 channels
    assert [sorted(map(int, n.stats)) for n in norms(m.model)] == [
        [7, 13, 20, 26, 32], [13, 26, 39, 52, 64], [26, 52, 77, 103, 128]]
    resident = m.client_task(1, UNLIMITED, TaskSpec("width", 0.6)).model
    assert [sorted(map(int, n.stats)) for n in norms(resident)] == [[7, 13, 20], [13, 26, 39], [26, 52, 77]]
    assert [n.weight.shape[0] for n in norms(resident)] == [20, 39, 77]


def test_a_step_at_width_p_updates_only_ps_statistics_and_the_leading_affine_entries():
    m = method("fjord")
    task = m.client_task(1, UNLIMITED, TaskSpec("width", 0.6))
    task.loss.sample = lambda: 0.4
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    training_step(task, make_optimizer(task.model, m.ctx.estimator.optimizer), torch.randn(8, *SHAPE),
                  torch.arange(8))
    after = task.model.state_dict()
    changed = {k for k in before if k.endswith(OPT_KEYS) and not torch.equal(before[k], after[k])}
    assert changed == {f"{k}.{s}" for k in ("blocks.0.1.stats.13", "blocks.1.1.stats.26", "blocks.2.1.stats.52")
                       for s in OPT_KEYS}
    grad = task.model.blocks[0][1].weight.grad  # 20 entries at p_max; only the 13 of p = 0.4 have a gradient
    assert grad[13:].eq(0).all() and grad[:13].ne(0).all()


def test_each_width_is_evaluated_with_its_own_statistics():
    m = method("fjord", context(fleet=[Device(0, 2**40)]), eval_rates=[0.4])
    norm = norms(m.model)[0]
    norm.stats["13"].running_mean.fill_(0.5)
    norm.stats["13"].running_var.fill_(4.0)
    models = m.eval_models()
    assert list(models) == ["p=1", "p=0.4"]
    narrow = models["p=0.4"].eval()
    x = torch.randn(4, *SHAPE)
    with torch.no_grad():
        conv = narrow.blocks[0][0](x)
        scale, shift = norm.weight[:13].view(1, -1, 1, 1), norm.bias[:13].view(1, -1, 1, 1)
        want = (conv - 0.5) / (4.0 + 1e-5) ** 0.5 * scale + shift
        assert torch.allclose(narrow.blocks[0][1](conv), want, atol=1e-5)


def test_headline_is_the_widest_width_the_fleet_can_train():
    probe = method("fjord")
    need = {s.value: probe.estimate(s).peak for s in probe.ladder}
    m = method("fjord", context(fleet=[Device(0, need[0.6]), Device(1, need[0.2])]))
    assert list(m.eval_models()) == ["p=0.6"]


def test_statistics_of_a_width_are_averaged_over_the_clients_that_hold_it():
    m = method("fjord")
    wide = m.client_task(1, UNLIMITED, TaskSpec("width", 0.6)).model.state_dict()
    narrow = m.client_task(1, UNLIMITED, TaskSpec("width", 0.2)).model.state_dict()
    key = "blocks.0.1.stats.7.running_mean"  # both hold p = 0.2's statistics; only the wide one p = 0.6's
    wide = {k: v + 1.0 if k.endswith("running_mean") else v for k, v in wide.items()}
    narrow = {k: v + 3.0 if k.endswith("running_mean") else v for k, v in narrow.items()}
    results = [uploaded(i, TaskSpec("width", r), s) for i, (r, s) in enumerate([(0.6, wide), (0.2, narrow)])]
    m.aggregate(1, results)
    state = m.model.state_dict()
    assert torch.allclose(state[key], torch.full((7,), 2.0))
    assert torch.allclose(state["blocks.0.1.stats.20.running_mean"], torch.full((20,), 1.0))
    assert torch.equal(state["blocks.0.1.stats.32.running_mean"], torch.zeros(32))  # nobody trained p = 1


def test_distillation_trains_the_teacher_on_labels_and_the_student_on_its_soft_targets():
    m = method("fjord", distill=True)
    task = m.client_task(1, UNLIMITED, TaskSpec("width", 0.8))
    task.loss.sample = lambda: 0.4
    x, y = torch.randn(8, *SHAPE), torch.arange(8)
    model = task.model
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    training_step(task, torch.optim.SGD(model.parameters(), lr=1.0), x, y)
    got = {n: (reference[n] - p.detach()) for n, p in model.named_parameters()}  # lr 1: the summed gradient
    model.load_state_dict(reference)
    model.zero_grad()
    teacher = model(x)
    F.cross_entropy(teacher, y).backward()
    student = leftmost_forward(model, m.shapes[0.4], x)
    F.cross_entropy(student, teacher.detach().softmax(1)).backward()
    for name, p in model.named_parameters():
        assert torch.allclose(got[name], p.grad, atol=1e-5), name


def test_distillation_holds_one_graph_at_a_time():
    """Two backward passes per step: the teacher's graph is freed before the student's forward, so
    distillation costs at most the gradients that already exist during the student's forward."""
    plain, kd = method("fjord"), method("fjord", distill=True)
    spec = TaskSpec("width", 0.8)
    params = sum(p.nbytes for p in plain.build_task(spec).model.parameters())
    cost = kd.estimate(spec).peak - plain.estimate(spec).peak
    assert 0 < cost <= params + 4096
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))
    assert kd.estimate(spec) == measure_task(lambda: kd.build_task(spec), x, y, kd.ctx.estimator.optimizer, 2)


def test_p_is_sampled_per_step_deterministically_up_to_the_clients_maximum():
    m = method("fjord")
    draws = []
    for _ in range(2):
        loss = m.client_task(3, Device(4, 2**40), TaskSpec("width", 0.6)).loss
        draws.append([loss.sample() for _ in range(40)])
    assert draws[0] == draws[1] and set(draws[0]) == {0.6, 0.4, 0.2}


@pytest.mark.parametrize("distill", [False, True])
def test_the_estimate_is_the_peak_of_every_width_a_step_can_draw(distill):
    """Each step draws its width; the estimate is the widest one's peak, measured to the byte."""
    m = method("fjord", distill=distill)
    spec = TaskSpec("width", 0.8)
    x, y = torch.randn(8, *SHAPE), torch.randint(0, 10, (8,))

    def peak_at(p: float) -> int:
        def build() -> Task:
            task = m.client_task(2, UNLIMITED, spec)
            task.loss.sample = lambda: p
            return task
        return measure_task(build, x, y, m.ctx.estimator.optimizer, 2).peak

    peaks = {p: peak_at(p) for p in m.allowed(spec.value)}
    assert list(peaks) == [0.8, 0.6, 0.4, 0.2]
    assert m.estimate(spec).peak == max(peaks.values()) == peaks[0.8] > peaks[0.2]


def test_no_central_pass_over_the_training_data():
    """A FjORD deployment has no server pass over all clients' data: statistics come from training."""
    assert not method("fjord").calibrates
