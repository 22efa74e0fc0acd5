"""The memory sources: the tensor tracker is exact, the estimate equals it, and the others behave."""

import copy
import gc
import json
import os
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.config import OptimizerConfig
from harness.data import Batches, random_bundle
from harness.estimate import estimate_task
from harness.memory import CATEGORIES, TensorTracker, sources
from harness.memory.tracker import MemoryReport, made_aside
from harness.methods import load_weights
from harness.models import ModelSpec, build_model
from harness.training import (
    Task,
    allocator_overhead,
    build_tracked,
    make_optimizer,
    measure_task,
    measured_step,
    train_local,
    training_step,
)

OPT = OptimizerConfig(lr=0.01, momentum=0.9, weight_decay=5e-4)
CPU = torch.device("cpu")


def frozen_task(name: str, shape: tuple[int, ...], frozen: int) -> Task:
    model = build_model(ModelSpec(name, 10, shape[0], shape[-1]))
    for block in model.blocks[:frozen]:
        block.requires_grad_(False)
    return Task(model)


@pytest.mark.parametrize("batch", [32, 64])
@pytest.mark.parametrize("frozen", [0, 2])
@pytest.mark.parametrize(("name", "shape"), [("cnn", (1, 8, 8)), ("resnet18", (3, 32, 32)), ("vgg11", (3, 32, 32))])
def test_estimate_equals_measured_training_peak(name, shape, frozen, batch):
    """The estimate (fake tensors) against the harness's real local training, measured steps only."""
    estimate = estimate_task(lambda: frozen_task(name, shape, frozen), shape, 10, batch, OPT, steps=2).memory
    torch.manual_seed(0)
    batches = Batches(random_bundle(2 * batch, shape), torch.arange(2 * batch), batch, CPU)
    measured = train_local(lambda: frozen_task(name, shape, frozen), batches, 1, OPT, steps_to_measure=2,
                           measure_rss=False)
    tensor = measured.memory["tensor"]
    assert abs(estimate.peak - tensor["peak"]) <= 0.01 * tensor["peak"]
    assert estimate.peak == tensor["peak"]  # in practice byte-exact
    assert estimate.to_record() == tensor
    assert sum(tensor[c] for c in CATEGORIES) == tensor["peak"]


def test_frozen_blocks_cut_activations_gradients_and_optimizer_state():
    full = estimate_task(lambda: frozen_task("resnet18", (3, 32, 32), 0), (3, 32, 32), 10, 32, OPT).memory
    frozen = estimate_task(lambda: frozen_task("resnet18", (3, 32, 32), 3), (3, 32, 32), 10, 32, OPT).memory
    assert frozen.categories["parameters"] == full.categories["parameters"]  # frozen weights still resident
    for category in ("activations", "optimizer"):
        assert frozen.categories[category] < full.categories[category]
    assert frozen.peak < full.peak


def test_agrees_with_torch_memtracker_on_a_model_without_frozen_parameters():
    """Independent cross-check: torch's own MemTracker counts the same bytes, less the input batch."""
    from torch.distributed._tools.mem_tracker import MemTracker

    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    torch.manual_seed(0)
    task = Task(build_model(ModelSpec("resnet18", 10, 3, 32)))
    optimizer = make_optimizer(task.model, OPT)
    mt = MemTracker()
    mt.track_external(task.model, optimizer)
    with mt:
        for step in range(2):
            training_step(task, optimizer, x, y)
            if step == 0:
                mt.reset_mod_stats()
    theirs = mt.get_tracker_snapshot("peak")[CPU]["Total"]

    torch.manual_seed(0)
    task = Task(build_model(ModelSpec("resnet18", 10, 3, 32)))
    optimizer = make_optimizer(task.model, OPT)
    tracker = TensorTracker()
    tracker.register_model(task.model)
    loss = None
    for _ in range(2):
        loss = measured_step(tracker, task, optimizer, x, y)
    inputs = x.nbytes + y.nbytes
    ours = tracker.report().peak
    assert loss is not None and 0 <= ours - inputs - theirs <= 8  # the previous step's 4-byte loss


def test_hand_count_for_a_small_mlp():
    """Parameters, momentum and the peak of a two-layer MLP, counted by hand."""
    batch, d_in, hidden, d_out = 64, 100, 200, 10
    model = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    task = Task(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    tracker = TensorTracker()
    tracker.register_model(model)
    x, y = torch.randn(batch, d_in), torch.randint(0, d_out, (batch,))
    for _ in range(2):
        measured_step(tracker, task, optimizer, x, y)
    report = tracker.report()
    p_bytes = 4 * (d_in * hidden + hidden + hidden * d_out + d_out)
    assert report.categories["parameters"] == p_bytes
    assert report.categories["optimizer"] == p_bytes  # one momentum buffer per parameter
    assert report.categories["buffers"] == 0
    # the peak holds at least weights + momentum + the input batch + the saved hidden layer
    floor = 2 * p_bytes + x.nbytes + y.nbytes + 4 * batch * hidden
    assert floor <= report.peak <= floor + 3 * p_bytes + 8 * batch * (hidden + d_out)


def test_the_tracker_forgets_the_dead_but_not_the_peak(monkeypatch):
    """A task whose every step is measured makes storages without end; those dead and not live at
    the peak are dropped as they pile up, and the peak is named as before."""
    monkeypatch.setattr("harness.memory.tracker.PRUNE_SLACK", 64)
    tracker = TensorTracker()
    with tracker:
        peak = torch.ones(1000)
        del peak
        for _ in range(1000):
            torch.ones(10)  # dead at once
    report = tracker.report()
    assert report.peak == 4000 and report.categories["activations"] == 4000
    assert len(tracker._counted) < 100  # of the 1,001 storages counted


def test_the_tracker_counts_every_new_output_and_no_view():
    """Ops of one new tensor, of several (values and indices), of a list of new tensors, and of
    views or in-place results (nothing new): each new storage is counted once, with its bytes."""
    x = torch.ones(4, 10)  # made before: not the tracker's
    tracker = TensorTracker()
    with tracker:
        values, indices = torch.max(x, dim=1)  # 16 + 32 bytes
        pieces = torch.ops.aten.unbind_copy.int(x)  # four of 40 bytes
        view, same = x[1:], x.add_(1)  # nothing new
        torch._foreach_add_([x], [x])  # returns nothing
        total = x.sum().item()  # a number (its 4-byte sum is new, and dies)
    assert [t.untyped_storage().nbytes() for t in (values, indices, *pieces)] == [16, 32, 40, 40, 40, 40]
    assert view.untyped_storage() is x.untyped_storage() and same is x and total == 160
    report = tracker.report()
    assert report.peak == 16 + 32 + 4 * 40 + 4 == report.categories["activations"]


class WithTable(nn.Module):
    """A module keeping tensors as plain attributes, neither parameters nor buffers."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 2)  # 40 bytes
        self.norm = nn.BatchNorm1d(2)  # 16 bytes of parameters, 24 of buffers
        self.table = torch.arange(6.0)  # 24 bytes
        self.scales = [torch.ones(2), {"bias": (torch.tensor(3.0),)}]  # 8 + 4 bytes

    def tensors(self) -> list[torch.Tensor]:
        return [*self.parameters(), *self.buffers(), self.table, self.scales[0], self.scales[1]["bias"][0]]


HELD = 40 + 16 + 24 + 24 + 8 + 4  # a WithTable's bytes


class KeepsTeacher:
    """A loss holding a model of its own: the client's state."""

    def __init__(self, teacher: nn.Module) -> None:
        self.teacher = teacher

    def __call__(self, model, x, y):
        return F.cross_entropy(model(x), y)


def dispatches(monkeypatch) -> list[str]:
    seen, real = [], TensorTracker.__torch_dispatch__

    def counted(self, func, types, args=(), kwargs=None):
        seen.append(str(func))
        return real(self, func, types, args, kwargs)

    monkeypatch.setattr(TensorTracker, "__torch_dispatch__", counted)
    return seen


def built_report(build) -> MemoryReport:
    """The tracker's report once ``build()``'s task is built, the task alive while it is read."""
    tracker = TensorTracker()
    task = build_tracked(tracker, build)
    report = tracker.report()
    del task
    return report


def test_a_model_made_aside_counts_as_if_built_under_the_tracker(monkeypatch):
    """Models are constructed with the tracker set aside while a task is built (their hundreds of
    small ops would each pay a Python dispatch) and counted once made: the same report to the byte
    as constructing them under the tracker, a kept teacher and its tensor attributes as state, the
    blocks cut off a full model not at all."""
    def build(construct) -> Task:
        teacher = construct(WithTable)
        full = construct(lambda: build_model(ModelSpec("cnn", 10, 1, 8)))
        return Task(nn.Sequential(*full.blocks[:2]), KeepsTeacher(teacher))

    seen = dispatches(monkeypatch)
    aside = built_report(lambda: build(made_aside))
    assert seen == []
    tracked = built_report(lambda: build(lambda make: make()))
    assert seen  # constructed under the tracker: every op dispatched
    assert aside == tracked and aside.categories["state"] == HELD
    kept = build(lambda make: make()).model
    assert aside.categories["parameters"] == sum(p.nbytes for p in kept.parameters())


def test_weights_loaded_aside_count_as_if_loaded_under_the_tracker(monkeypatch):
    """A client's copy of the server's weights is loaded with the tracker set aside: the same
    report, the server's values."""
    spec = ModelSpec("cnn", 10, 1, 8)
    server = build_model(spec)
    state = server.state_dict(keep_vars=True)

    def loaded_under_the_tracker(model, weights):
        model.load_state_dict(weights)
        return model

    def build(load) -> Task:
        return Task(load(made_aside(lambda: build_model(spec)), state))

    seen = dispatches(monkeypatch)
    aside = built_report(lambda: build(load_weights))
    assert seen == []
    assert built_report(lambda: build(loaded_under_the_tracker)) == aside and seen
    model = build(load_weights).model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), server.state_dict().values()))


def test_a_model_built_during_a_step_is_tracked_op_by_op(monkeypatch):
    """Outside a task's build the tracker is not set aside: transients of a construction in a step
    would be part of its peak."""
    seen = dispatches(monkeypatch)
    tracker = TensorTracker()
    with tracker:
        kept = made_aside(WithTable)
    assert seen and tracker.report().peak == HELD == sum(t.nbytes for t in kept.tensors())


def test_a_failed_construction_puts_the_tracker_back():
    def broken() -> nn.Module:
        raise ValueError("no such width")

    tracker = TensorTracker()
    with tracker, tracker.phase_of("build"):
        with pytest.raises(ValueError, match="no such width"):
            made_aside(broken)
        kept = torch.ones(3)  # tracked again
    assert tracker.report().peak == 12 and kept.nbytes == 12


def test_the_optimizer_state_exists_from_the_first_step():
    """SGD makes its momentum in its first step, so that step alone would under-report; the harness
    makes it with the optimizer, and the first step already has the peak of the second."""
    one = estimate_task(lambda: frozen_task("cnn", (1, 8, 8), 0), (1, 8, 8), 10, 32, OPT, steps=1).memory
    two = estimate_task(lambda: frozen_task("cnn", (1, 8, 8), 0), (1, 8, 8), 10, 32, OPT, steps=2).memory
    assert one.categories["optimizer"] == one.categories["parameters"] > 0
    assert one == two


def test_momentum_made_with_the_optimizer_trains_exactly_as_sgds_own():
    torch.manual_seed(0)
    model = build_model(ModelSpec("cnn", 10, 1, 8))
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    plain = copy.deepcopy(model)
    ours, theirs = make_optimizer(model, OPT), torch.optim.SGD(plain.parameters(), lr=OPT.lr, momentum=OPT.momentum,
                                                               weight_decay=OPT.weight_decay, foreach=False)
    assert len(ours.state) == len(list(model.parameters())) and not theirs.state
    for _ in range(3):
        training_step(Task(model), ours, x, y)
        training_step(Task(plain), theirs, x, y)
    for a, b in zip(model.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_clients_tracker_is_freed_when_training_ends(monkeypatch):
    """Its weak references' callbacks make a tracker a reference cycle; closed, it goes with its last
    reference (not at some later garbage collection), and storages freed later call none of them."""
    make_optimizer(nn.Linear(2, 2), OPT)  # the first optimizer imports Dynamo, which keeps its caller's frames
    trackers, frees, at_close = [], [], []
    init, free, close = TensorTracker.__init__, TensorTracker._free, TensorTracker.close

    def tracked_init(self):
        init(self)
        trackers.append(weakref.ref(self))

    def counted_free(self, ref):
        frees.append(ref)
        free(self, ref)

    def counted_close(self):
        report = close(self)
        at_close.append(len(frees))
        return report

    monkeypatch.setattr(TensorTracker, "__init__", tracked_init)
    monkeypatch.setattr(TensorTracker, "_free", counted_free)
    monkeypatch.setattr(TensorTracker, "close", counted_close)
    batches = Batches(random_bundle(64, (1, 8, 8)), torch.arange(64), 32, CPU)
    gc.disable()
    try:
        train_local(lambda: frozen_task("cnn", (1, 8, 8), 0), batches, 1, OPT, 1, measure_rss=False)
        assert len(trackers) == 1 and trackers[0]() is None
        assert at_close == [len(frees)]  # the model, its gradients and momentum died after: no callback
    finally:
        gc.enable()


def test_only_the_measured_steps_are_tracked():
    batches = Batches(random_bundle(96, (1, 8, 8)), torch.arange(96), 32, CPU)
    result = train_local(lambda: frozen_task("cnn", (1, 8, 8), 0), batches, 2, OPT, steps_to_measure=2,
                         measure_rss=False)
    assert result.steps == 6 and result.memory["tensor"]["peak"] > 0


RSS_PROBE = """
import json, torch
from harness.memory import sources
probes = sources.start_probes(torch.device("cpu"), rss=True)
block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
probes.stop()
print(json.dumps(probes.records()["rss"]))
"""


def test_rss_source_reports_a_reset_high_water_mark():
    """In a fresh process: a long-lived one may reuse pages its allocator already holds."""
    if not sources.rss_supported():
        pytest.skip("the rss source needs Linux /proc/self/clear_refs")
    out = subprocess.run([sys.executable, "-c", RSS_PROBE], capture_output=True, text=True, check=True)
    rss = json.loads(out.stdout)
    assert 60 * 2**20 <= rss["delta"] <= 200 * 2**20 and rss["peak"] == rss["start"] + rss["delta"]


def _status_bytes(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    line = next(row for row in status.splitlines() if row.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def test_rss_readings_are_the_status_files_vmrss_and_vmhwm():
    """The source reads the RSS from statm; what it reads must be the status file's numbers, in bytes."""
    if not sources.rss_supported():
        pytest.skip("the rss source needs Linux /proc/self/clear_refs")
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB (mmapped) touched, then freed: a mark above the RSS
    del block
    before = _status_bytes("VmHWM")
    assert before <= sources.rss_peak() <= _status_bytes("VmHWM")
    sources.reset_rss_peak()
    assert abs(sources.rss_now() - _status_bytes("VmRSS")) <= 2**20
    assert sources.rss_peak() < before - 32 * 2**20  # the freed block is no longer the mark


def test_rss_readings_do_not_depend_on_how_the_kernel_splits_a_read(monkeypatch):
    """procfs may hand a file over in pieces (a long Groups line puts VmHWM far down the status file)."""
    if not sources.rss_supported():
        pytest.skip("the rss source needs Linux /proc/self/clear_refs")
    read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: read(fd, min(n, 64)))
    before = _status_bytes("VmHWM")
    assert before <= sources.rss_peak() <= _status_bytes("VmHWM")
    assert sources.rss_now() > 0


RESET_PROBE = """
from harness.memory import sources
sources.reset_rss_peak()
print(sources.rss_peak() - sources.rss_now())
"""


def test_a_spawned_process_mark_is_its_own_after_a_reset():
    """A process started by exec (a Ray worker, a measuring subprocess) must not inherit its
    parent's mark, as getrusage's ``ru_maxrss`` does."""
    if not sources.rss_supported():
        pytest.skip("the rss source needs Linux /proc/self/clear_refs")
    block = torch.ones(256 * 2**20 // 4)  # the parent's mark well above the child's RSS
    out = subprocess.run([sys.executable, "-c", RESET_PROBE], capture_output=True, text=True, check=True)
    del block
    assert int(out.stdout) < 16 * 2**20


def test_cuda_and_nvml_sources_are_absent_not_zero_on_cpu():
    records = sources.start_probes(CPU, rss=False).records()
    assert "cuda" not in records and "nvml" not in records and "rss" not in records
    assert sources.nvml_for(CPU) is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sources_and_estimate_on_gpu():
    cuda = torch.device("cuda")
    shape = (3, 32, 32)
    estimate = estimate_task(lambda: frozen_task("resnet18", shape, 0), shape, 10, 32, OPT, device=cuda).memory
    batches = Batches(random_bundle(64, shape), torch.arange(64), 32, cuda)
    result = train_local(lambda: frozen_task("resnet18", shape, 0), batches, 1, OPT, 2)
    assert abs(estimate.peak - result.memory["tensor"]["peak"]) <= 0.01 * estimate.peak
    cuda_rec, tensor = result.memory["cuda"], result.memory["tensor"]["peak"]
    assert cuda_rec["task_peak"] == cuda_rec["allocated_peak"] - cuda_rec["allocated_start"] >= tensor
    assert cuda_rec["overhead"] == cuda_rec["task_peak"] - tensor
    nvml = result.memory["nvml"]  # sampled: the cache was emptied, so the task's own pool shows
    assert nvml["peak"] == nvml["start"] + nvml["delta"] and nvml["delta"] > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_the_allocator_overhead_measured_for_the_gate_matches_a_client_on_gpu():
    cuda = torch.device("cuda")
    shape = (3, 32, 32)
    overhead = allocator_overhead(lambda: frozen_task("resnet18", shape, 0), shape, 10, 32, OPT, 2, cuda)
    batches = Batches(random_bundle(64, shape), torch.arange(64), 32, cuda)
    result = train_local(lambda: frozen_task("resnet18", shape, 0), batches, 1, OPT, 2)
    measured = result.memory["cuda"]
    assert overhead >= 0 and abs(overhead - measured["overhead"]) <= 0.05 * measured["task_peak"]


def test_a_failing_nvml_read_ends_the_sampling_not_the_training():
    calls = []

    def read() -> int:
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("NVML_ERROR_GPU_IS_LOST")
        return 100 * len(calls)

    sampler = sources.PeakSampler(read, interval=0.001)
    deadline = time.monotonic() + 10
    while sampler._thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not sampler._thread.is_alive()
    assert sampler.stop() == {"peak": 200, "start": 100, "delta": 100, "interval_us": 1000}


def test_the_nvml_sampler_keeps_a_peak_freed_before_the_end():
    """A start/end delta reads nothing when memory is back down at the end; the sampler keeps it."""
    values = iter([100, 500, 200])
    calls = []

    def read() -> int:
        calls.append(1)
        return next(values, 200)

    sampler = sources.PeakSampler(read, interval=0.001)
    deadline = time.monotonic() + 10
    while len(calls) < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert sampler.stop() == {"peak": 500, "start": 100, "delta": 400, "interval_us": 1000}


def test_short_batches_do_not_hide_the_peak():
    """37 samples at batch 32 in micro-batches of 2: steps of 32 (sixteen 2s) and 5 (2 + 3). The
    short step peaks higher, so measurement takes one step at each batch size, and meets the
    estimate of that pair, not the full step's."""
    shape = (1, 8, 8)

    def build():
        return Task(build_model(ModelSpec("cnn", 10, 1, 8)), micro_batch=2)

    batches = Batches(random_bundle(37, shape), torch.arange(37), 32, CPU)
    result = train_local(build, batches, 2, OPT, steps_to_measure=1, measure_rss=False)
    both = estimate_task(build, shape, 10, [32, 5], OPT).memory
    assert result.steps == 4 and result.memory["tensor"] == both.to_record()
    assert both.peak > estimate_task(build, shape, 10, 32, OPT).memory.peak


def test_steps_that_are_not_alike_are_all_measured():
    """A loss that holds 1 MB more in its second step than in its first (as FjORD's width, drawn
    per step): measured in every step when the task says its steps differ, else only the first."""
    shape = (1, 8, 8)

    def build(alike: bool):
        calls, held = [], []

        def loss(model, x, y):
            calls.append(1)
            if len(calls) == 2:
                held.append(torch.zeros(2**18))  # alive from the second step on
            return nn.functional.cross_entropy(model(x), y)
        return lambda: Task(build_model(ModelSpec("cnn", 10, 1, 8)), loss, steps_alike=alike)

    batches = Batches(random_bundle(64, shape), torch.arange(64), 32, CPU)
    alike = train_local(build(True), batches, 1, OPT, 1, measure_rss=False).memory["tensor"]["peak"]
    every = train_local(build(False), batches, 1, OPT, 1, measure_rss=False).memory["tensor"]["peak"]
    assert every == alike + 2**20


def test_a_client_smaller_than_a_batch_is_measured_at_its_own_size():
    shape = (1, 8, 8)
    batches = Batches(random_bundle(20, shape), torch.arange(20), 32, CPU)
    result = train_local(lambda: frozen_task("cnn", shape, 0), batches, 3, OPT, steps_to_measure=1, measure_rss=False)
    at_20 = estimate_task(lambda: frozen_task("cnn", shape, 0), shape, 10, 20, OPT).memory
    assert result.memory["tensor"] == at_20.to_record()


class BufferLoss(nn.Module):
    """A loss that holds tensors as module buffers."""

    def __init__(self, held: list[torch.Tensor]) -> None:
        super().__init__()
        for i, t in enumerate(held):
            self.register_buffer(f"held{i}", t)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)


class AttributeLoss:
    """A loss object that holds tensors as a plain attribute."""

    def __init__(self, held: list[torch.Tensor]) -> None:
        self.held = held

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y)


def closure_loss(held: list[torch.Tensor]):
    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(model(x), y) + 0 * len(held)  # the closure keeps ``held``

    return loss


HOLDERS = {"module buffer": BufferLoss, "attribute": AttributeLoss, "closure": closure_loss}


@pytest.mark.parametrize("how", list(HOLDERS))
def test_state_a_task_holds_counts_however_it_is_held(how):
    """A copy of the global weights kept beside the model (FedProx's, FedDyn's) is the client's memory:
    the plain task's peak plus the copy, as ``state``, in the estimate and in the measurement."""
    shape = (1, 8, 8)

    def plain() -> Task:
        return Task(build_model(ModelSpec("cnn", 10, 1, 8)))

    def holding() -> Task:
        task = plain()
        task.loss = HOLDERS[how]([p.detach().clone() for p in task.model.parameters()])
        return task

    copy = sum(p.nbytes for p in plain().model.parameters())
    x, y = torch.randn(32, *shape), torch.randint(0, 10, (32,))
    base = measure_task(plain, x, y, OPT, 2)
    for report in (measure_task(holding, x, y, OPT, 2), estimate_task(holding, shape, 10, 32, OPT).memory):
        assert report.peak == base.peak + copy
        assert report.categories == {**base.categories, "state": copy}

