"""Width/depth baselines: sub-model extraction and aggregation, windows, sizes, estimate == measured."""

from __future__ import annotations

import pytest
import torch

import baselines  # noqa: F401  (registration)
from baselines.submodel import SubModel, aggregate, counted, leftmost, rolling, shapes_of
from harness.config import OptimizerConfig
from harness.fleet import Device
from harness.methods import METHODS, TaskSpec, weighted_average
from harness.training import Task, measure_task

from helpers import SHAPE, context, method, uploaded


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


def test_counted_averaging_weighs_each_entry_by_its_running_update_count():
    """FedRolex's server, worked by hand on a 3-client toy: counts start at 1 and grow by one with
    each client holding the entry, inside the round; only counted keys are weighed so."""
    state = {"bn": torch.zeros(3), "conv": torch.zeros(3, 1)}
    shapes = {k: v.shape for k, v in state.items()}
    counts = {"bn": torch.ones(3, dtype=torch.float64)}

    def holding(channels: list[int], value: float) -> tuple[SubModel, dict[str, torch.Tensor], float]:
        idx = torch.tensor(channels)
        sub = SubModel({"bn": (idx,), "conv": (idx, None)})
        return sub, {"bn": torch.full((len(channels),), value), "conv": torch.full((len(channels), 1), value)}, 1.0

    a, b, c = holding([0, 1, 2], 6.0), holding([0, 1], 12.0), holding([0], 18.0)
    out = aggregate(state, counted([a, b, c], counts, shapes))
    # bn[0]: (1*6 + 2*12 + 3*18) / 6; bn[1]: (1*6 + 2*12) / 3; bn[2]: client a alone
    assert out["bn"].tolist() == [14.0, 10.0, 6.0]
    assert out["conv"].flatten().tolist() == [12.0, 9.0, 6.0]  # plain means
    assert counts["bn"].tolist() == [4.0, 3.0, 2.0]
    out = aggregate(out, counted([holding([0, 1, 2], 10.0), holding([0, 1], 40.0)], counts, shapes))
    assert torch.allclose(out["bn"], torch.tensor([(4 * 10 + 5 * 40) / 9, (3 * 10 + 4 * 40) / 7, 10.0]))
    assert counts["bn"].tolist() == [6.0, 5.0, 3.0]


def test_fedrolex_counts_norm_entries_and_classifier_plain_means_convolutions_and_resumes_its_counts():
    """Three full-width clients in round 1: a BN weight is (1 u0 + 2 u1 + 3 u2) / 6, a convolution
    the plain mean; ``averaging = "plain"`` is the plain mean everywhere (HeteroFL's combine). The
    counts are resume state: a method loaded from the state aggregates round 2 as the original."""
    labels = {d: [1] * 10 for d in range(3)}
    m = method("fedrolex", context(labels=labels))
    spec = TaskSpec("width", 1.0)
    base = {k: v.clone() for k, v in m.model.state_dict().items()}
    uploads = [perturbed(base, d + 1) for d in range(3)]
    results = [uploaded(d, spec, u) for d, u in enumerate(uploads)]
    bn = next(k for k, v in base.items() if v.dim() == 1 and not k.startswith("head"))
    conv = next(k for k, v in base.items() if v.dim() == 4)
    m.aggregate(1, results)
    got = m.model.state_dict()
    want = (uploads[0][bn].double() + 2 * uploads[1][bn].double() + 3 * uploads[2][bn].double()) / 6
    assert torch.allclose(got[bn].double(), want, atol=1e-6)
    want_fc = sum((i + 1) * u["head.fc.weight"].double() for i, u in enumerate(uploads)) / 6
    assert torch.allclose(got["head.fc.weight"].double(), want_fc, atol=1e-6)
    assert torch.allclose(got[conv], sum(u[conv] for u in uploads) / 3, atol=1e-6)
    plain = method("fedrolex", context(labels=labels), averaging="plain")
    plain.aggregate(1, results)
    assert torch.allclose(plain.model.state_dict()[bn], sum(u[bn] for u in uploads) / 3, atol=1e-6)

    resumed = method("fedrolex", context(labels=labels))
    resumed.load_state_dict(m.state_dict())
    round_two = [uploaded(d, spec, perturbed(base, d + 7)) for d in range(3)]
    for each in (m, resumed):
        each.aggregate(2, round_two)
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in m.model.state_dict().items())
    assert m.counts[bn].tolist() == [7.0] * base[bn].numel()


def test_extract_cuts_real_smaller_tensors_for_resnet_and_its_shortcuts():
    m = method("fedrolex", context("resnet18", (3, 8, 8)), rates=[1.0, 0.25])
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
    m = method("heterofl", context("resnet18", (3, 32, 32)))
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
    x, y = torch.randn(8, *shape), torch.randint(0, 10, (8,))
    return measure_task(lambda: m.client_task(1, Device(0, 2**40), spec), x, y, OptimizerConfig(), 2).peak


@pytest.mark.parametrize(("name", "params", "spec"), [
    ("heterofl", {}, TaskSpec("width", 0.5)),
    ("heterofl", {"masked_ce": True}, TaskSpec("width", 0.25)),
    ("fedrolex", {}, TaskSpec("width", 0.125)),
    ("fjord", {"rates": [0.5]}, TaskSpec("width", 0.5)),  # one rate: every step is the peak
])
def test_estimate_equals_measured(name, params, spec):
    m = method(name, **params)
    assert m.estimate(spec).peak == measured_peak(m, spec)


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
    assert m.calibrates
    off = method("heterofl", global_bn_stats=False)  # no pass over the training data at all
    assert not off.calibrates and off.eval_models()["global"] is off.model
    assert not method("fedrolex").calibrates


def test_label_split_averages_a_classifier_row_over_the_clients_that_hold_its_class():
    """HeteroFL's and FedRolex's combine: client 1 never saw class 0, so row 0 (and bias 0) of the
    aggregate is client 0's alone; rows both clients hold are their mean."""
    labels = {0: [5] * 10, 1: [0] + [5] * 9}
    for name, params in (("heterofl", {}), ("fedrolex", {"averaging": "plain"})):
        m = method(name, context(labels=labels), rates=[1.0, 0.5], **params)
        specs = [TaskSpec("width", 1.0), TaskSpec("width", 0.5)]
        uploads = [perturbed(m.client_task(1, Device(d, 2**40), s).model.state_dict(), d + 1)
                   for d, s in enumerate(specs)]
        results = [uploaded(d, s, u) for d, (s, u) in enumerate(zip(specs, uploads, strict=True))]
        m.aggregate(1, results)
        fc_w, fc_b = m.model.head.fc.weight, m.model.head.fc.bias
        assert torch.equal(fc_w[0], uploads[0]["head.fc.weight"][0]) and fc_b[0] == uploads[0]["head.fc.bias"][0]
        half = uploads[1]["head.fc.weight"].shape[1]  # the width-0.5 client holds the leftmost inputs
        mean = (uploads[0]["head.fc.weight"][1, :half] + uploads[1]["head.fc.weight"][1, :half]) / 2
        assert torch.allclose(fc_w[1, :half], mean)
        assert torch.equal(fc_w[1, half:], uploads[0]["head.fc.weight"][1, half:])
        plain = method(name, context(labels=labels), rates=[1.0, 0.5], label_split=False, **params)
        plain.aggregate(1, results)
        assert torch.allclose(plain.model.head.fc.weight[0, :half], (uploads[0]["head.fc.weight"][0, :half]
                                                                     + uploads[1]["head.fc.weight"][0, :half]) / 2)


def test_fedrolex_evaluates_with_batch_statistics_heterofl_with_gathered_ones():
    """In evaluation, FedRolex's output for a sample depends on the rest of its test batch (each
    batch's own BN statistics); HeteroFL's, once its statistics are gathered, does not."""
    x = torch.randn(8, *SHAPE)

    def depends_on_the_batch(model: torch.nn.Module) -> bool:
        model.eval()
        with torch.no_grad():
            return not torch.allclose(model(x)[:4], model(x[:4]), atol=1e-6)

    assert depends_on_the_batch(method("fedrolex").eval_models()["global"])
    heterofl = method("heterofl")
    heterofl.calibrate([(x, torch.zeros(8, dtype=torch.long))])
    assert not depends_on_the_batch(heterofl.eval_models()["global"])
    assert method("heterofl").params.masked_ce and method("fedrolex").params.label_split


# -- FedProx -------------------------------------------------------------------------------------

def test_fedprox_gradient_is_cross_entropy_plus_mu_times_the_distance_to_the_global_model():
    m = method("fedprox", mu=0.3)
    task = m.client_task(1, Device(0, 2**40), TaskSpec("full"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # local training has moved the weights away from the global ones
        for p in task.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    x, y = torch.randn(8, *SHAPE), torch.arange(8)
    task.loss(task.model, x, y).backward()
    prox = {n: p.grad.clone() for n, p in task.model.named_parameters()}
    task.model.zero_grad()
    torch.nn.functional.cross_entropy(task.model(x), y).backward()
    for (name, p), w_global in zip(task.model.named_parameters(), m.model.parameters(), strict=True):
        assert torch.allclose(prox[name], p.grad + 0.3 * (p.detach() - w_global), atol=1e-6), name


def test_fedprox_client_holds_a_copy_of_the_global_weights_in_estimate_and_measurement():
    prox, exclusive = method("fedprox"), method("exclusive")
    full = TaskSpec("full")
    copy = sum(p.nbytes for p in prox.model.parameters())
    estimate = prox.estimate(full)
    assert estimate.categories["state"] == copy and exclusive.estimate(full).categories["state"] == 0
    # nothing else is kept for the term: at most one parameter's temporary of its backward pass
    largest = max(p.nbytes for p in prox.model.parameters())
    assert 0 <= estimate.peak - exclusive.estimate(full).peak - copy <= largest
    assert estimate.peak == measured_peak(prox, full)
    assert "budget" in prox.choose(1, Device(1, exclusive.estimate(full).peak)).reason  # the copy must fit too


def test_a_copy_under_the_same_class_name_gets_its_own_estimates():
    """One estimator serves a whole suite: a copy of a method under the same class name (as
    docs/adding-a-method.md starts one) must not be gated on the original's estimates."""
    ctx = context()
    fedavg = METHODS["fedavg"]
    half = type(fedavg.__name__, (fedavg,), {"build_task": lambda self, spec: Task(self.ctx.build_model(0.5))})
    original, copy = method("fedavg", ctx), half(fedavg.parse_params({}), ctx)
    assert copy.estimate(TaskSpec("full")).peak < original.estimate(TaskSpec("full")).peak
