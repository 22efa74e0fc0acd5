"""Width/depth baselines: sub-model extraction and aggregation, windows, sizes, estimate == measured."""

from __future__ import annotations

import pytest
import torch

import baselines  # noqa: F401  (registration)
from baselines.submodel import SubModel, aggregate, leftmost, rolling, shapes_of
from harness.config import OptimizerConfig
from harness.fleet import Device
from harness.memory import TensorTracker
from harness.methods import METHODS, Estimator, MethodContext, TaskSpec, weighted_average
from harness.models import ModelSpec
from harness.training import make_optimizer, measured_step

SHAPE = (1, 8, 8)


def context(model: str = "cnn", shape: tuple[int, ...] = SHAPE, width: float = 1.0) -> MethodContext:
    estimator = Estimator(shape, 10, 8, OptimizerConfig(), 2, torch.device("cpu"))
    spec = ModelSpec(model, 10, shape[0], shape[-1])
    labels = {0: [5] * 9 + [0]}  # device 0 holds no sample of class 9
    return MethodContext(spec, width, shape, 10, [Device(0, 2**40)], 0, torch.device("cpu"), estimator, labels)


def method(name: str, model: str = "cnn", shape: tuple[int, ...] = SHAPE, **params):
    cls = METHODS[name]
    return cls(cls.parse_params(params), context(model, shape))


def numel(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: v + torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v + seed
            for k, v in state.items()}


# -- aggregation ---------------------------------------------------------------------------------

def test_full_width_reproduces_fedavg_bit_for_bit():
    model = context().build_model()  # tracked BN: integer counters too
    state = model.state_dict()
    full = SubModel.of(shapes_of(model), shapes_of(model), rolling(5))
    uploads = [perturbed(state, s) for s in (1, 2, 3)]
    weights = [10, 25, 7]
    ours = aggregate(state, [(full, u, w) for u, w in zip(uploads, weights, strict=True)])
    ref = weighted_average(uploads, weights)
    assert ours.keys() == ref.keys()
    assert all(torch.equal(ours[k], ref[k]) for k in ref)


def test_overlapping_index_sets_average_per_entry_and_keep_untrained():
    state = {"w": torch.arange(12.0).reshape(4, 3), "n": torch.tensor(4)}
    a = SubModel({"w": (torch.tensor([0, 1]), None), "n": ()})
    b = SubModel({"w": (torch.tensor([1, 2]), torch.tensor([0, 2])), "n": ()})
    ua = {"w": torch.full((2, 3), 10.0), "n": torch.tensor(6)}
    ub = {"w": torch.full((2, 2), 40.0), "n": torch.tensor(9)}
    out = aggregate(state, [(a, ua, 1), (b, ub, 2)])
    expected = torch.tensor([[10.0, 10, 10], [30, 10, 30], [40, 7, 40], [9, 10, 11]])
    assert torch.equal(out["w"], expected)
    assert out["n"].item() == 8  # (6 + 2 * 9) / 3
    plain = aggregate(state, [(a, ua, 1), (b, ub, 1)])
    assert plain["w"][1, 0].item() == 25.0


def test_extract_cuts_real_smaller_tensors_for_resnet_and_its_shortcuts():
    m = method("fedrolex", "resnet18", (3, 8, 8), rates=[1.0, 0.25])
    for rnd in (1, 40, 200):  # windows that wrap around 64, 128, 256 and 512 channels
        task = m.client_task(rnd, Device(0, 2**40), TaskSpec("width", 0.25))
        assert numel(task.model) < numel(m.model) / 12
        task.model(torch.randn(2, 3, 8, 8))
    state = m.model.state_dict()
    sub = m.submodel(3, 0.25).extract(state)
    assert torch.equal(sub["blocks.0.0.weight"], state["blocks.0.0.weight"][2:18])  # 64 -> 16 from 2
    assert sub["blocks.0.0.weight"].shape[1] == 3  # image channels kept whole
    assert sub["head.fc.weight"].shape == (10, 128)  # classes kept whole


# -- windows -------------------------------------------------------------------------------------

def test_rolling_window_arithmetic():
    assert rolling(3)(8, 4).tolist() == [3, 4, 5, 6]
    assert rolling(6)(8, 4).tolist() == [6, 7, 0, 1]
    assert rolling(17)(8, 4).tolist() == [1, 2, 3, 4]
    assert leftmost(8, 3).tolist() == [0, 1, 2]


@pytest.mark.parametrize(("name", "even"), [("fedrolex", True), ("heterofl", False)])
def test_window_coverage_over_rounds(name, even):
    m = method(name, rates=[1.0, 0.25])
    counts = torch.zeros(32)  # the first convolution's 32 output channels
    for rnd in range(1, 33):
        (out, *_) = m.submodel(rnd, 0.25).index["blocks.0.0.weight"]
        counts[out] += 1
    if even:
        assert torch.equal(counts, torch.full((32,), 8.0))
    else:
        assert counts[:8].eq(32).all() and counts[8:].eq(0).all()


# -- sizes ---------------------------------------------------------------------------------------

RESNET18_PARAMS = {1.0: 11_173_962, 0.5: 2_797_610, 0.25: 701_466, 0.125: 176_402, 0.0625: 44_622}


def test_resnet18_sub_model_parameter_counts():
    m = method("heterofl", "resnet18", (3, 32, 32))
    with torch.device("meta"):
        counts = {s.value: numel(m.build_task(s).model) for s in m.ladder}
    assert counts == RESNET18_PARAMS
    assert numel(m.model) == RESNET18_PARAMS[1.0]


def test_largest_fitting_rate_and_exclusion():
    m = method("heterofl")
    peaks = {s.value: m.estimate(s).peak for s in m.ladder}
    assert m.choose(1, Device(1, peaks[0.25] + 1)) == TaskSpec("width", 0.25)
    assert m.choose(1, Device(2, peaks[1.0])) == TaskSpec("width", 1.0)
    assert "budget" in m.choose(1, Device(3, peaks[0.0625] - 1)).reason


# -- estimate == measured --------------------------------------------------------------------------

def measured_peak(m, spec: TaskSpec, shape=SHAPE) -> int:
    task = m.client_task(1, Device(0, 2**40), spec)
    opt = make_optimizer(task.model, OptimizerConfig())
    tracker = TensorTracker()
    tracker.register_model(task.model)
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))
    loss = None
    for _ in range(2):  # the previous step's loss stays alive, as in training and the estimate
        loss = measured_step(tracker, task, opt, x, y)
    del loss
    return tracker.report().peak


@pytest.mark.parametrize(("name", "params", "spec"), [
    ("heterofl", {}, TaskSpec("width", 0.5)),
    ("heterofl", {"masked_ce": True}, TaskSpec("width", 0.25)),
    ("fedrolex", {}, TaskSpec("width", 0.125)),
    ("depthfl", {}, TaskSpec("depth", 2)),
    ("fjord", {"rates": [0.5]}, TaskSpec("width", 0.5)),  # one rate: every step is the peak
])
def test_estimate_equals_measured(name, params, spec):
    m = method(name, **params)
    assert m.estimate(spec).peak == measured_peak(m, spec)


def test_fjord_estimate_is_the_peak_of_sampled_steps():
    m = method("fjord", distill=True)
    spec = TaskSpec("width", 0.8)
    assert m.estimate(spec).peak >= measured_peak(m, spec)
    assert m.estimate(spec).peak > m.estimate(TaskSpec("width", 0.6)).peak


def test_depthfl_trains_the_first_blocks_and_aggregates_layer_wise():
    m = method("depthfl")
    task = m.client_task(1, Device(0, 2**40), TaskSpec("depth", 2))
    assert len(task.model.blocks) == 2 and len(task.model.heads) == 2
    assert numel(task.model) < numel(m.model) / 3
    logits = {k: f(torch.randn(4, *SHAPE)) for k, f in m.eval_models().items()}
    assert {k: v.shape for k, v in logits.items()} == {"deepest": (4, 10), "ensemble": (4, 10)}


def test_fjord_samples_p_per_step_deterministically_up_to_its_maximum():
    m = method("fjord")
    draws = []
    for _ in range(2):
        loss = m.client_task(3, Device(4, 2**40), TaskSpec("width", 0.6)).loss
        draws.append([loss.sample() for _ in range(40)])
    assert draws[0] == draws[1] and set(draws[0]) == {0.6, 0.4, 0.2}
    resident = m.client_task(3, Device(4, 2**40), TaskSpec("width", 0.6)).model
    assert numel(resident) == numel(m.ctx.build_model(0.6))


def test_masked_cross_entropy_ignores_classes_absent_from_the_client():
    m = method("heterofl", masked_ce=True)
    task = m.client_task(1, Device(0, 2**40), TaskSpec("width", 0.5))
    x, y = torch.randn(8, *SHAPE), torch.arange(8)
    task.loss(task.model, x, y).backward()
    grad = task.model.head.fc.weight.grad
    assert torch.count_nonzero(grad[9]) == 0 and torch.count_nonzero(grad[:9]) > 0


def test_static_bn_is_evaluated_with_training_data_statistics():
    """HeteroFL's sBN: the evaluated twin's BN statistics are those of the training data."""
    m = method("heterofl")
    x = torch.randn(64, *SHAPE)
    m.calibrate([(x, torch.zeros(64, dtype=torch.long))])
    bn = m.eval_models()["global"].blocks[0][1]
    with torch.no_grad():
        conv_out = m.model.blocks[0][0](x)
    assert torch.allclose(bn.running_mean, conv_out.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, conv_out.var((0, 2, 3)), atol=1e-4)
    # the weights are the global model's; only the statistics are new
    assert torch.equal(bn.weight, m.model.blocks[0][1].weight)
    off = method("heterofl", global_bn_stats=False)
    off.calibrate([(x, torch.zeros(64, dtype=torch.long))])
    assert off.eval_models()["global"] is off.model


def test_depthfl_depths_beyond_the_model_are_a_config_error():
    from harness.config import ConfigError

    with pytest.raises(ConfigError, match=r"depths \[4\] exceed the 3 blocks of cnn"):
        method("depthfl", depths=[4])
