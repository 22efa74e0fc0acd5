"""Local training, shared by every method so that time and memory numbers stay comparable."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from harness import interrupts
from harness.config import OptimizerConfig
from harness.data import Batches
from harness.memory import MemoryReport, TensorTracker, sources

# A loss returns one scalar, or yields several terms when a step needs several backward passes
# (FjORD's distillation: the teacher's, then the student's); each term is back-propagated before the
# next one is computed, so only one graph is held at a time.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor | Iterator[torch.Tensor]]


class NonFiniteLossError(RuntimeError):
    """Training diverged; the run stops, and every record written so far stays."""


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(model(x), y)


def full_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return model.state_dict()


def chunk_bounds(n: int, micro_batch: int) -> list[tuple[int, int]]:
    """Where a batch of ``n`` is cut into micro-batches of ``micro_batch`` (0: none), as (start, end)
    pairs; a single left-over sample joins the one before (batch norm cannot train on one)."""
    if not micro_batch or micro_batch >= n:
        return [(0, n)]
    bounds = [(start, min(start + micro_batch, n)) for start in range(0, n, micro_batch)]
    if bounds[-1][1] - bounds[-1][0] == 1 and micro_batch > 1:
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def peak_batches(sizes: Iterable[int], micro_batch: int = 0) -> tuple[int, ...]:
    """Of the batch sizes a client trains, those whose steps can hold its peak, largest first: every
    step starts from the same state and peaks higher with a larger batch, unless a smaller batch
    is cut into a larger micro-batch (in micro-batches of 2, 32 is all 2s but 5 is 2 + 3)."""
    kept: list[int] = []
    largest = 0  # the largest piece of the sizes kept so far
    for size in sorted(set(sizes), reverse=True):
        piece = max(end - start for start, end in chunk_bounds(size, micro_batch))
        if piece > largest:
            kept.append(size)
            largest = piece
    return tuple(kept)


@dataclass
class Task:
    """What one client trains: its resident model, its loss, and what it sends back.

    ``loss`` must not read tensor values into Python (no ``.item()``), since the same task also
    runs under fake tensors for the memory estimate. Tensors the task keeps besides its model (in
    the loss, a closure, a module buffer) are the client's ``state`` and count in its memory.
    """

    model: nn.Module
    loss: LossFn = cross_entropy
    upload: Callable[[nn.Module], dict[str, torch.Tensor]] = full_state
    micro_batch: int = 0  # accumulate gradients over micro-batches of this size (0: the whole batch at once)
    # Whether the loss is a mean over samples (micro-batches may split the batch: not so for a loss
    # of batch statistics, or one that samples per call), and whether the model may recompute its
    # blocks (not so for a loss that runs the model with other weights, as FjORD's ordered dropout)
    splittable: bool = True
    checkpointable: bool = True
    # Whether every step at a batch size has the same memory; not so for a loss that draws its
    # shape per step (FjORD's width): then every step is measured
    steps_alike: bool = True
    # The estimate runs only the micro-batches whose memory can differ: the first (it creates the
    # gradients), the second (it adds to them; every later full one repeats it exactly) and the last
    # (short, or joined with a single left-over sample). Real training runs them all.
    distinct_chunks_only: bool = False

    def chunk_bounds(self, n: int) -> list[tuple[int, int]]:
        """Where a batch of ``n`` is cut into micro-batches, as (start, end) pairs."""
        bounds = chunk_bounds(n, self.micro_batch)
        if self.distinct_chunks_only and len(bounds) > 3:
            bounds = [bounds[0], bounds[1], bounds[-1]]
        return bounds

    def chunks(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """The batch as the step back-propagates it: micro-batches (views) with the share of the
        batch each stands for, so that their scaled losses sum to the batch's mean loss."""
        bounds = self.chunk_bounds(len(y))
        if len(bounds) == 1:
            yield x, y, 1.0
            return
        for start, end in bounds:
            yield x[start:end], y[start:end], (end - start) / len(y)


@dataclass
class LocalResult:
    state: dict[str, torch.Tensor]
    num_samples: int
    steps: int
    train_loss: float
    train_time: float
    bytes_down: int
    bytes_up: int
    memory: dict[str, dict[str, int]] = field(default_factory=dict)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


LR_SCHEDULES: dict[str, Callable[[float], float]] = {  # share of the run done -> factor on lr
    "constant": lambda done: 1.0,
    "cosine": lambda done: 0.5 * (1 + math.cos(math.pi * done)),
}


def round_optimizer(cfg: OptimizerConfig, rnd: int, rounds: int) -> OptimizerConfig:
    """The optimizer of round ``rnd`` (from 1) of ``rounds``: lr scaled by the schedule. The server
    decides it per round, as in FL practice (each client's optimizer lives for one round only)."""
    return replace(cfg, lr=cfg.lr * LR_SCHEDULES[cfg.schedule]((rnd - 1) / rounds))


def make_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD over the trainable parameters only: frozen ones get no state. The multi-tensor
    (``foreach``) path, whose temporaries differ, is chosen from the device explicitly, because
    torch's own default turns it off for the fake tensors of the estimate.

    The momentum buffers are made here, as zeros, not in the first step: that step then computes
    exactly what SGD's own first step would (0 x momentum + gradient), and every step, the first
    included, starts from the same state, so one measured step gives the peak of training."""
    trainable = trainable_parameters(model)
    if not trainable:
        raise ValueError("the task's model has no trainable parameter")
    optimizer = torch.optim.SGD(trainable, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                foreach=trainable[0].device.type == "cuda")
    if cfg.momentum:
        for p in trainable:
            optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return optimizer


def start_training(tracker: TensorTracker | None, task: Task, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """The task's model in training mode and its optimizer, whose state counts from now on."""
    task.model.train()
    optimizer = make_optimizer(task.model, cfg)
    if tracker is not None:
        tracker.name_roles(task.model, optimizer)
    return optimizer


def build_tracked(tracker: TensorTracker, build: Callable[[], Task], device: torch.device | None = None) -> Task:
    """Build a client's task under ``tracker`` (and move its model to ``device``): everything the
    task keeps from then on counts, its model as parameters and buffers and anything else as ``state``."""
    with tracker, tracker.phase_of("build"):
        task = build()
        if device is not None:
            task.model.to(device)
    tracker.register_model(task.model)
    tracker.reset_peak()
    return task


def loss_terms(task: Task, x: torch.Tensor, y: torch.Tensor, phase) -> Iterator[torch.Tensor]:
    """The task's loss as terms to back-propagate one after the other, each computed in the
    ``forward`` phase only once the previous one's backward pass has run."""
    with phase("forward"):
        out = task.loss(task.model, x, y)
    if isinstance(out, torch.Tensor):
        yield out
        return
    out = iter(out)
    while True:
        with phase("forward"):
            term = next(out, None)
        if term is None:
            return
        yield term


def training_step(task: Task, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                  tracker: TensorTracker | None = None) -> torch.Tensor:
    """One step (the loss's terms, summed over the task's micro-batches, each scaled by its share
    of the batch); with a tracker, each phase's new tensors are labelled and roles named at the end."""
    phase = tracker.phase_of if tracker is not None else lambda _: contextlib.nullcontext()
    optimizer.zero_grad(set_to_none=True)
    total = None
    for xs, ys, share in task.chunks(x, y):
        for term in loss_terms(task, xs, ys, phase):
            if share != 1.0:
                with phase("forward"):
                    term = term * share
            with phase("backward"):
                term.backward()
            total = term.detach() if total is None else total + term.detach()
    if total is None:
        raise ValueError("the task's loss yielded no term")
    with phase("optimizer"):
        optimizer.step()
    if tracker is not None:
        tracker.name_roles(task.model, optimizer)
    return total


def measured_step(tracker: TensorTracker, task: Task, optimizer: torch.optim.Optimizer,
                  x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with tracker:
        tracker.register_inputs(x, y)
        return training_step(task, optimizer, x, y, tracker)


def measure_steps(build: Callable[[], Task], batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  cfg: OptimizerConfig, probes: sources.Probes | None = None) -> MemoryReport:
    """The tracker's report for a freshly built task trained one step on each batch; the estimate
    runs exactly this under fake tensors. With ``probes`` (started before the task is built) the
    task is built on their device and their peaks restart once it is built."""
    tracker = TensorTracker()
    task = build_tracked(tracker, build, None if probes is None else probes.device)
    if probes is not None:
        probes.rebase()
    optimizer = start_training(tracker, task, cfg)
    for x, y in batches:  # each loss dropped at once, as in training
        measured_step(tracker, task, optimizer, x, y)
    return tracker.close()


def measure_task(build: Callable[[], Task], x: torch.Tensor, y: torch.Tensor, cfg: OptimizerConfig,
                 steps: int, probes: sources.Probes | None = None) -> MemoryReport:
    """``measure_steps`` for ``steps`` steps on the one batch ``(x, y)``."""
    return measure_steps(build, [(x, y)] * steps, cfg, probes)


def allocator_overhead(build: Callable[[], Task], input_shape: tuple[int, ...], num_classes: int, batch_size: int,
                       cfg: OptimizerConfig, steps: int, device: torch.device) -> int:
    """What a GPU's caching allocator holds at its peak beyond the tracker's peak (cuDNN workspaces,
    block rounding, fragmentation), measured by training the task ``steps`` times on random data;
    ``measure.gate = "allocator"`` adds it to the estimate so an admitted device would not run out."""
    probes = sources.start_probes(device, rss=False)
    try:
        x = torch.randn(batch_size, *input_shape, device=device)
        y = torch.randint(0, num_classes, (batch_size,), device=device)
        report = measure_task(build, x, y, cfg, steps, probes)
    finally:
        probes.stop()
    return max(0, probes.records(report.peak)["cuda"]["overhead"])


def tensor_bytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


def train_local(build: Callable[[], Task], batches: Batches, epochs: int, cfg: OptimizerConfig,
                steps_to_measure: int, measure_rss: bool = True, context: str = "",
                measure: bool = True) -> LocalResult:
    """Build the client's task and train it. Memory is measured from the moment the task is built
    (what it holds) and in the first ``steps_to_measure`` steps at each batch size that can hold the
    client's peak (``peak_batches``: its full batch; a short last one only if cut into a larger
    micro-batch), or in every step if they are not alike. The other steps run untracked, so
    measurement barely changes training speed (the process-level probes sample until the last
    measured step). With ``measure`` false nothing is tracked (its ``memory`` is empty): a client
    whose task shape the run has already measured."""
    probes = sources.start_probes(batches.device, measure_rss) if measure else None
    try:
        tracker = TensorTracker() if measure else None
        if tracker is not None:
            task = build_tracked(tracker, build, batches.device)
            probes.rebase()
        else:
            task = build()
            task.model.to(batches.device)
        model = task.model
        bytes_down = tensor_bytes(model.state_dict(keep_vars=True))
        optimizer = start_training(tracker, task, cfg)
        to_measure = dict.fromkeys(peak_batches(batches.sizes, task.micro_batch), steps_to_measure)  # steps left
        start = time.perf_counter()
        total, steps = 0.0, 0
        for _ in range(epochs):
            for x, y in batches:
                interrupts.check()
                if tracker is not None and (not task.steps_alike or to_measure.get(len(y))):
                    value = float(measured_step(tracker, task, optimizer, x, y))
                    if task.steps_alike:
                        to_measure[len(y)] -= 1
                        if not any(to_measure.values()):
                            probes.stop()
                else:
                    value = float(training_step(task, optimizer, x, y))  # the loss is not held into the next step
                if not math.isfinite(value):
                    raise NonFiniteLossError(f"{context}: the training loss became {value} at step {steps + 1}; "
                                             "lower optimizer.lr or check the data")
                total += value * len(y)
                steps += 1
        if batches.device.type == "cuda":
            torch.cuda.synchronize(batches.device)
        train_time = time.perf_counter() - start
        memory = {}
        if tracker is not None:
            tensor = tracker.close()
            memory = {"tensor": tensor.to_record(), **probes.records(tensor.peak)}
    finally:  # an error (a NaN loss, out of memory) must not leave the sampler running
        if probes is not None:
            probes.stop()
    state = {k: v.detach().to("cpu", copy=True) for k, v in task.upload(model).items()}
    num_samples = len(batches.y)
    return LocalResult(state, num_samples, steps, total / max(1, num_samples * epochs), train_time,
                       bytes_down, tensor_bytes(state), memory)


def evaluate(model: nn.Module, batches: Batches) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` over ``batches``; the model goes back to its
    own device and mode afterwards (methods keep their global state on the CPU)."""
    home = next(model.parameters()).device
    was_training = model.training
    model.to(batches.device).eval()
    correct, loss, n = 0, 0.0, 0
    try:
        with torch.no_grad():
            for x, y in batches:
                logits = model(x)
                loss += F.cross_entropy(logits, y, reduction="sum").item()
                correct += (logits.argmax(1) == y).sum().item()
                n += len(y)
    finally:
        model.to(home).train(was_training)
    return correct / n, loss / n


