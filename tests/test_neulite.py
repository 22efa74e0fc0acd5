"""NeuLite: HSIC, stage models, mentor, harmonizer, schedules, memory and an end-to-end run."""

from __future__ import annotations

import importlib
import itertools
import json
import math

import pytest
import torch
from torch import nn

from harness.config import OptimizerConfig
from harness.engine import run_suite
from harness.estimate import estimate_task
from harness.fleet import Device
from harness.methods import METHODS, Excluded, MethodContext, TaskSpec
from harness.plugins import load_plugins
from harness.suites import suite_from_dict
from harness.training import make_optimizer, measure_task
from neulite.harmonizer import overlap_modules, refresh
from neulite.hsic import centred_kernel, gaussian_kernel, hsic_centred, nhsic
from neulite.method import NeuLite
from neulite.params import NeuLiteParams, per_stage
from neulite.schedule import Cyclic, Sequential, effective_movement, proportional_rounds
from neulite.stages import StageModel

from helpers import context

load_plugins()
SIGMA = 5.0


def neulite(ctx: MethodContext | None = None, **raw) -> NeuLite:
    return NeuLite(NeuLite.parse_params(raw), ctx or context())


# -- HSIC ---------------------------------------------------------------------------------------
def slow_kernel(a: torch.Tensor, sigma: float) -> torch.Tensor:
    m, d = a.shape
    k = torch.empty(m, m, dtype=torch.float64)
    for i, j in itertools.product(range(m), range(m)):
        k[i, j] = math.exp(-float(((a[i] - a[j]) ** 2).sum()) / (2 * sigma**2 * d))
    return k


def slow_hsic(a: torch.Tensor, b: torch.Tensor, sigma: float) -> float:
    m = a.shape[0]
    h = torch.eye(m, dtype=torch.float64) - torch.ones(m, m, dtype=torch.float64) / m
    return float(torch.trace(slow_kernel(a, sigma) @ h @ slow_kernel(b, sigma) @ h)) / m**2


def test_hsic_matches_a_slow_reference():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(12, 7, generator=g) * 4, torch.randn(12, 3, generator=g) * 4
    b[:, 0] += a[:, 0]  # some dependence
    assert torch.allclose(gaussian_kernel(a, SIGMA).double(), slow_kernel(a, SIGMA), atol=1e-6)
    ab = hsic_centred(centred_kernel(a, SIGMA), centred_kernel(b, SIGMA))
    assert float(ab) == pytest.approx(slow_hsic(a, b, SIGMA), rel=1e-4, abs=1e-9)
    ref = slow_hsic(a, b, SIGMA) / math.sqrt(slow_hsic(a, a, SIGMA) * slow_hsic(b, b, SIGMA))
    assert float(nhsic(a, b, SIGMA)) == pytest.approx(ref, rel=1e-4)


def test_nhsic_of_a_batch_with_itself_is_one_and_is_batched_float32():
    a = torch.randn(16, 30, dtype=torch.float64)
    value = nhsic(a, a, SIGMA)
    assert value.dtype == torch.float32 and float(value) == pytest.approx(1.0, abs=1e-5)
    stacked = nhsic(torch.randn(3, 16, 5), torch.randn(3, 16, 4), SIGMA)
    assert stacked.shape == (3,)


def test_nhsic_is_invariant_to_permuting_the_batch_jointly():
    a, b = torch.randn(20, 6), torch.randn(20, 9)
    perm = torch.randperm(20)
    assert float(nhsic(a[perm], b[perm], SIGMA)) == pytest.approx(float(nhsic(a, b, SIGMA)), abs=1e-5)


def test_nhsic_with_a_single_label_is_zero_with_finite_gradient():
    z = torch.randn(8, 4, requires_grad=True)
    one_label = torch.zeros(8, 10)
    one_label[:, 3] = 1
    value = nhsic(z, one_label, SIGMA)
    value.backward()
    assert float(value.detach()) == 0.0 and torch.isfinite(z.grad).all()


# -- stages -------------------------------------------------------------------------------------
def test_output_module_convolutions_are_built_as_the_releases():
    """Kaiming-normal weights with fan_out and ReLU gain, no bias (the release's output modules);
    ``output_bias`` adds a bias that starts at zero. Checked on a convolution large enough that its
    weights' spread tells the two inits apart (PyTorch's default has std 1/sqrt(3 fan_in))."""
    torch.manual_seed(0)
    ctx = context("resnet18", (3, 32, 32), 1.0)
    stage = StageModel(ctx.build_model(), 1)
    for conv in stage.out.convs:
        assert conv.bias is None
        fan_out = conv.out_channels * 9
        assert conv.weight.std().item() == pytest.approx((2 / fan_out) ** 0.5, rel=0.02)
    biased = StageModel(ctx.build_model(), 1, output_bias=True)
    assert all(torch.equal(conv.bias, torch.zeros(conv.out_channels)) for conv in biased.out.convs)
    assert NeuLiteParams().output_bias is False


ZOO = [("cnn", (1, 8, 8), 1.0), ("resnet18", (3, 32, 32), 0.125), ("resnet34", (3, 32, 32), 0.125),
       ("vgg11", (3, 32, 32), 0.125), ("vgg16", (3, 32, 32), 0.125)]


@pytest.mark.parametrize(("name", "shape", "width"), ZOO)
def test_stage_models_of_the_zoo(name, shape, width):
    ctx = context(name, shape, width)
    model = ctx.build_model()
    num = model.num_blocks
    x = torch.randn(2, *shape)
    for t in range(1, num + 1):
        stage = StageModel(ctx.build_model(), t, overlap=0, projection=True)
        assert len(stage.blocks) == t and len(stage.out.convs) == num - t  # no later block held
        for conv, info in zip(stage.out.convs, model.block_info[t:], strict=True):
            assert (conv.in_channels, conv.out_channels, conv.stride, conv.kernel_size) == (
                info.in_channels, info.out_channels, (info.stride, info.stride), (3, 3))
        assert not any(isinstance(m, nn.BatchNorm2d | nn.ReLU) for m in stage.out.convs.modules())
        d = model.block_info[-1].out_channels
        assert [(lin.in_features, lin.out_features) for lin in stage.out.proj] == [(d, 4 * d), (4 * d, 2 * d),
                                                                                (2 * d, d)]
        frozen = [p for b in stage.blocks[: t - 1] for p in b.parameters()]
        assert not any(p.requires_grad for p in frozen)
        z, pooled = stage.features(x)
        assert pooled.shape == (2, d) and z.shape[:2] == (2, d) and stage(x).shape == (2, 10)
    full_keys = {k.replace("head.", "out.head.", 1) for k in model.state_dict()}
    last = StageModel(ctx.build_model(), num)
    assert set(last.state_dict()) == full_keys  # stage T is the full model with its real head


@pytest.mark.parametrize("frozen_bn", ["eval", "train"])
def test_frozen_blocks_run_without_autograd_with_their_norm_mode(frozen_bn):
    stage = StageModel(context("resnet18", (3, 32, 32), 0.125).build_model(), 3, overlap=1,
                       frozen_bn=frozen_bn).train()
    seen = {}
    watched = {"block 1": stage.blocks[0], "block 2, unit 1": stage.blocks[1][0],
               "block 2, unit 2": stage.blocks[1][1], "block 3": stage.blocks[2]}
    for name, module in watched.items():
        module.register_forward_hook(lambda m, a, out, name=name: seen.__setitem__(name, out.requires_grad))
    stage(torch.randn(2, 3, 32, 32)).sum().backward()
    # only block 2's last unit, which holds the trainable tail (conv2/bn2), runs with autograd
    assert seen == {"block 1": False, "block 2, unit 1": False, "block 2, unit 2": True, "block 3": True}
    frozen_training = frozen_bn == "train"
    assert stage.blocks[0][1].training == frozen_training and stage.blocks[2][0].bn1.training
    assert stage.blocks[1][-1].bn1.training == frozen_training and stage.blocks[1][-1].bn2.training


def expected_trainable(name: str, stage: StageModel, overlap: int) -> set[str]:
    t = stage.stage
    names = {n for n, _ in stage.named_parameters() if n.startswith((f"blocks.{t - 1}.", "out."))}
    if overlap and t > 1:
        if name == "cnn":  # conv, bn, relu[, pool]: the last conv and BN are the block's only ones
            names |= {f"blocks.{t - 2}.0.weight", f"blocks.{t - 2}.1.weight", f"blocks.{t - 2}.1.bias"}
        else:
            unit = f"blocks.{t - 2}.{len(stage.blocks[t - 2]) - 1}"
            names |= {f"{unit}.conv2.weight", f"{unit}.bn2.weight", f"{unit}.bn2.bias"}
    return names


@pytest.mark.parametrize(("name", "shape", "width"), ZOO[:2])
@pytest.mark.parametrize("overlap", [0, 1])
def test_exactly_the_specified_parameters_receive_gradients(name, shape, width, overlap):
    method = neulite(context(name, shape, width), overlap=overlap)
    for t in range(1, method.num_stages + 1):
        task = method.build_task(TaskSpec("stage", t))
        x, y = torch.randn(6, *shape), torch.arange(6) % 3
        task.loss(task.model, x, y).backward()
        got = {n for n, p in task.model.named_parameters() if p.grad is not None}
        want = expected_trainable(name, task.model, overlap)
        assert got == want
        assert got == {n for n, p in task.model.named_parameters() if p.requires_grad}
        optimized = {id(p) for g in make_optimizer(task.model, OptimizerConfig()).param_groups for p in g["params"]}
        assert optimized == {id(p) for n, p in task.model.named_parameters() if n in want}


def test_harmonizer_off_trains_no_overlap_and_refreshes_by_inheritance_only(monkeypatch):
    """``harmonizer = false``: stage t trains block t and its output module alone (the default
    overlap of 1 is off), and the refresh before a stage never copies from the full model."""
    refreshed = []
    monkeypatch.setattr(importlib.import_module("neulite.method"), "refresh",
                        lambda stages, t, full_trained, from_full: refreshed.append(from_full))
    for harmonizer in (False, True):
        method = neulite(context("resnet18", (3, 32, 32), 0.125), harmonizer=harmonizer)
        task = method.build_task(TaskSpec("stage", 2))
        trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
        assert trainable == expected_trainable("resnet18", task.model, 1 if harmonizer else 0)
        method.choose(2, Device(0, 2**40))
    assert refreshed == [False, True]


def test_overlap_modules_are_the_block_tail():
    block = context("resnet18", (3, 32, 32), 0.125).build_model().blocks[1]
    unit = block[-1]
    assert overlap_modules(block, 1) == [unit.conv2, unit.bn2]
    assert overlap_modules(block, 2) == [unit.conv1, unit.conv2, unit.bn1, unit.bn2]
    assert overlap_modules(block, 0) == []


# -- mentor -------------------------------------------------------------------------------------
def test_mentor_lambdas_per_stage_and_ablations():
    assert per_stage([0.1, 0.0], 3) == pytest.approx([0.1, 0.05, 0.0])
    assert per_stage([1.0, 2.0, 3.0, 4.0], 4) == [1.0, 2.0, 3.0, 4.0]
    assert per_stage([0.5], 5) == [0.5] * 5
    p = NeuLiteParams(lambda1=[0.3, 0.1], lambda2=[0.0, 0.2])
    assert [v for pair in p.lambdas(3) for v in pair] == pytest.approx([0.3, 0.0, 0.2, 0.1, 0.1, 0.2])
    assert NeuLiteParams(mentor=False).lambdas(4) == [(0.0, 0.0)] * 4
    method = neulite(lambda1=[0.3, 0.1], lambda2=[0.0, 0.2])
    assert method.stages[0].out.proj is None and method.stages[1].out.proj is not None
    plain = neulite(mentor=False)
    task = plain.build_task(TaskSpec("stage", 1))
    x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    ce = nn.functional.cross_entropy(task.model(x), y)
    assert torch.allclose(task.loss(task.model, x, y), ce)
    with pytest.raises(ValueError):
        NeuLiteParams(lambda1=[-1.0])


def test_mentor_terms_lower_the_loss_by_the_weighted_nhsic():
    method = neulite(lambda1=[0.5], lambda2=[0.0])
    task = method.build_task(TaskSpec("stage", 2))
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8) % 4
    z, pooled = task.model.features(x)
    ce = nn.functional.cross_entropy(task.model.out.head.fc(pooled), y)
    want = ce - 0.5 * nhsic(z.flatten(1), x.flatten(1), SIGMA)
    assert torch.allclose(task.loss(task.model, x, y), want)
    both = neulite(lambda1=[0.5], lambda2=[0.7]).build_task(TaskSpec("stage", 2))  # the label term: P(z_t) and Y
    z, pooled = both.model.features(x)
    ce = nn.functional.cross_entropy(both.model.out.head.fc(pooled), y)
    labels = nhsic(both.model.out.proj(pooled), nn.functional.one_hot(y, 10).float(), SIGMA)
    assert labels > 0 and torch.allclose(both.loss(both.model, x, y),
                                         ce - 0.5 * nhsic(z.flatten(1), x.flatten(1), SIGMA) - 0.7 * labels)


# -- harmonizer refresh -------------------------------------------------------------------------
def block_keys(stage: StageModel, indices) -> set[str]:
    return {k for k in stage.state_dict() if any(k.startswith(f"blocks.{i}.") for i in indices)}


def test_refresh_copies_exactly_the_specified_tensors():
    method = neulite()
    stages = method.stages
    for s in stages:  # make every stage's tensors distinct
        with torch.no_grad():
            for v in s.state_dict().values():
                v.copy_(torch.randn(v.shape) if v.is_floating_point() else torch.randint(0, 9, v.shape))
    before = [{k: v.clone() for k, v in s.state_dict().items()} for s in stages]
    assert set(refresh(stages, 2, full_trained=False, from_full=True)) == block_keys(stages[1], [0])
    assert set(refresh(stages, 1, full_trained=False, from_full=True)) == set()
    keys = set(refresh(stages, 2, full_trained=True, from_full=True))
    assert keys == block_keys(stages[1], [0, 1])
    after = stages[1].state_dict()
    for k, v in after.items():
        src = stages[2] if k.startswith("blocks.1.") else stages[0] if k.startswith("blocks.0.") else None
        assert torch.equal(v, src.state_dict()[k] if src is not None else before[1][k]), k
    assert set(refresh(stages, 2, full_trained=True, from_full=False)) == block_keys(stages[1], [0])
    assert set(refresh(stages, 3, full_trained=True, from_full=True)) == block_keys(stages[2], [0, 1])


# -- schedules ----------------------------------------------------------------------------------
def test_cyclic_schedule():
    assert [Cyclic(3).stage(r) for r in range(1, 8)] == [1, 2, 3, 1, 2, 3, 1]


def test_sequential_schedule_fixed_and_proportional_rounds():
    s = Sequential([2, 1, 3])
    assert [s.stage(r) for r in range(1, 10) for _ in range(2)][::2] == [1, 1, 2, 3, 3, 3, 3, 3, 3]
    assert proportional_rounds(20, [100, 300, 600]) == [2, 6, 12]
    assert proportional_rounds(4, [1, 1000]) == [1, 4]
    method = neulite(schedule="sequential", sequential_rounds=10)
    sizes = [sum(p.numel() for p in b.parameters()) for b in context().build_model().blocks]
    assert method.schedule.rounds == proportional_rounds(10, sizes)
    assert neulite(schedule="sequential", stage_rounds=[4]).schedule.rounds == [4, 4, 4]
    with pytest.raises(ValueError, match="stage_rounds"):
        neulite(schedule="sequential", stage_rounds=[1, 2])


def test_sequential_movement_trigger():
    assert effective_movement([torch.zeros(3), torch.ones(3), 2 * torch.ones(3)]) == pytest.approx(1.0)
    assert effective_movement([torch.zeros(3), torch.ones(3), torch.zeros(3)]) == 0.0
    s = Sequential([100, 100], threshold=0.5, window=2)
    block = nn.Linear(2, 1)
    assert s.stage(1) == 1
    for rnd, value in enumerate([0.0, 1.0, 0.0], start=1):  # back and forth: settled
        assert s.stage(rnd) == 1
        nn.init.constant_(block.weight, value)
        s.observe(block)
    state = s.state_dict()
    assert s.stage(4) == 2 and s.stage(4) == 2
    resumed = Sequential([100, 100], threshold=0.5, window=2)
    resumed.load_state_dict(state)
    assert resumed.stage(4) == 2


# -- memory -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "shape", "width", "batch"),
                         [("cnn", (1, 8, 8), 1.0, 32), ("resnet18", (3, 32, 32), 0.25, 8)])
def test_estimate_equals_tensor_measurement_for_every_stage(name, shape, width, batch):
    method = neulite(context(name, shape, width, batch))
    cfg = OptimizerConfig()
    for spec in method.memory_specs():
        estimate = estimate_task(lambda spec=spec: method.build_task(spec), shape, 10, batch, cfg, 2).memory
        x, y = torch.randn(batch, *shape), torch.arange(batch) % 10
        measured = measure_task(lambda spec=spec: method.client_task(1, Device(0, 2**40), spec), x, y, cfg, 2)
        assert measured == estimate, spec


def test_memory_table_lists_every_stage_and_saves_memory(capsys):
    from harness.cli import main

    assert main(["memory", "resnet18", "--method", "neulite", "--batch", "8", "--width", "0.25"]) == 0
    rows = [line.split("|")[1:-1] for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    table = {cells[0].strip(): float(cells[1]) for cells in rows[1:]}
    assert list(table)[1:] == ["stage=1", "stage=2", "stage=3", "stage=4"]
    assert max(list(table.values())[1:]) < table["full model (FedAvg)"]


# -- participation and the end-to-end run -------------------------------------------------------
def test_devices_are_eligible_only_for_the_stage_of_the_round():
    ctx = context()
    probe = neulite(ctx)
    peaks = [probe.estimate(s).peak for s in probe.memory_specs()]
    budget = (min(peaks) + max(peaks)) // 2
    method = neulite(context(fleet=[Device(0, budget)]))
    for rnd in range(1, 4):
        choice = method.choose(rnd, Device(0, budget))
        fits = peaks[rnd - 1] <= budget
        assert (choice == TaskSpec("stage", rnd)) if fits else isinstance(choice, Excluded)
        assert method.round_info(rnd) == {"stage": rnd}


def test_end_to_end_records_and_resume_state(tmp_path):
    probe = neulite(context(batch=16))
    peaks = [probe.estimate(s).peak / 2**20 for s in probe.memory_specs()]
    cfg = suite_from_dict({
        "name": "nl", "rounds": 4, "clients_per_round": 3, "local_epochs": 1, "batch_size": 16,
        "seeds": [0], "device": "cpu",
        "data": {"name": "synthetic", "synthetic_samples": 300, "partition": "iid"},
        "model": {"name": "cnn"},
        "fleet": {"devices": 4, "distribution": "tiers", "tiers_mb": [min(peaks) * 0.5, max(peaks) * 1.5]},
        "methods": [{"method": "neulite"}],
    })
    folder = run_suite(cfg, tmp_path, log=lambda _: None)
    run = folder / "neulite-seed0"
    rounds = [json.loads(line) for line in (run / "rounds.jsonl").read_text().splitlines()]
    clients = [json.loads(line) for line in (run / "clients.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rounds] == [1, 2, 3, 1]
    assert [r["accuracy"] is None for r in rounds] == [True, True, False, False]
    assert all(set(r["evals"]) == {"full", "stage"} for r in rounds)
    assert all(r["evals"]["stage"]["accuracy"] is not None for r in rounds)
    excluded = [c for c in clients if c["status"] == "excluded"]
    assert excluded and all("stage=" in c["reason"] and "budget" in c["reason"] for c in excluded)
    assert all(c["stage"] == r["stage"] for r in rounds for c in clients
               if c["round"] == r["round"] and c["status"] == "trained")
    # a client sends back only what it trained: in stage 3 block 1 is frozen and stays home (in
    # stage 2 the overlap makes all of block 1 of this CNN trainable)
    trained = [c for c in clients if c["status"] == "trained"]
    assert all(c["bytes_up"] == c["bytes_down"] for c in trained if c["stage"] < 3)
    assert all(c["bytes_up"] < c["bytes_down"] for c in trained if c["stage"] == 3)
    assert any(c["stage"] == 3 for c in trained)
    # everything needed to continue: every stage model, the schedule, the full-model flag
    state = torch.load(run / "checkpoint.pt", weights_only=False)["method"]
    fresh = METHODS["neulite"](NeuLite.parse_params({}), context(batch=16))
    fresh.load_state_dict(state)
    assert fresh.full_trained and len(state["stages"]) == 3
    for a, b in zip(fresh.stages, state["stages"], strict=True):
        assert all(torch.equal(v, b[k]) for k, v in a.state_dict().items())


@pytest.mark.parametrize("frozen_bn", ["train", "eval"])
def test_upload_holds_exactly_what_training_changed(frozen_bn):
    """Stage 3 of the CNN without overlap: block 3 and the head train; block 1 and 2 are frozen, and
    their norm statistics change (and go up) only when frozen norms run in training mode."""
    method = neulite(context(), overlap=0, frozen_bn=frozen_bn)
    task = method.client_task(1, Device(0, 2**40), TaskSpec("stage", 3))
    task.model.train()
    sent = set(task.upload(task.model))
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    stats = {f"blocks.{b}.1.{s}" for b in (0, 1, 2) for s in ("running_mean", "running_var", "num_batches_tracked")}
    frozen_stats = {k for k in stats if not k.startswith("blocks.2.")}
    assert sent == trainable | (stats if frozen_bn == "train" else stats - frozen_stats)
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    task.loss(task.model, torch.randn(8, 1, 8, 8), torch.arange(8)).backward()
    changed = {k for k, v in task.model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == sent - trainable  # the forward pass moved exactly the statistics that are sent


def test_full_model_is_stage_t_as_last_trained():
    """Cyclic, three stages, five rounds: stage 3 last trained in round 3, stages 1 and 2 in rounds 4
    and 5. The full model after the last round is stage 3 as it was trained (NEULITE.md sections 1
    and 6, as in the release): later stages' blocks reach it only through the next refresh."""
    method = neulite(context(rounds=5))
    method.trained_in, method.round, method.current = [4, 5, 3], 5, 2
    models = method.eval_models()
    assert set(models) == {"full", "stage"}
    assert models["full"] is method.stages[-1] and models["stage"] is method.stages[1]
    method.trained_in = [4, 5, 0]
    assert method.eval_models()["full"] is None  # no full model before stage T has trained
