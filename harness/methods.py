"""The plug-in contract for training methods, and their registry.

A method decides, each round, what every device would train (a ``TaskSpec``: the full model, a
stage, a width, a depth), builds the client's model for a spec, aggregates the clients' uploads and
names the models to evaluate. The harness owns everything else (selection, the memory gate, local
training, measurement, records), so all methods are measured the same way.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from harness.config import ConfigError, OptimizerConfig, from_dict
from harness.data import epoch_sizes
from harness.estimate import TaskCost, estimate_task
from harness.fleet import MB, Device
from harness.memory import MemoryReport
from harness.memory.tracker import ModuleT, made_aside, tracker_aside
from harness.models import BlockModel, ModelSpec, build_model
from harness.models.base import NormLayer
from harness.registry import Registry
from harness.training import LocalResult, Task, allocator_overhead, peak_batches


def checkpointable_blocks(task: Task) -> int:
    """How many leading blocks of ``task``'s model may be checkpointed: all of a zoo model's whose
    loss runs it with its own weights, none otherwise."""
    return task.model.num_blocks if isinstance(task.model, BlockModel) and task.checkpointable else 0


@dataclass(frozen=True)
class TaskSpec:
    """A hashable description of what a client trains, e.g. ``TaskSpec("width", 0.5)``, and how:
    in micro-batches with gradient accumulation, with the first blocks' activations recomputed
    (any method's task may be trained so; ``Method.fitting`` finds the cheapest way that fits)."""

    kind: str
    value: float | int | None = None
    micro_batch: int = 0  # micro-batch size, gradients accumulated to the suite's batch (0: none)
    checkpointed: int = 0  # leading blocks whose activations are recomputed in the backward pass

    @property
    def label(self) -> str:
        label = self.kind if self.value is None else f"{self.kind}={self.value:g}"
        return label + (f" mb={self.micro_batch}" if self.micro_batch else "") + \
            (f" ckpt={self.checkpointed}" if self.checkpointed else "")

    def to_record(self) -> dict[str, Any]:
        record = {"task": self.label, self.kind: self.value}
        if self.micro_batch:
            record["micro_batch"] = self.micro_batch
        if self.checkpointed:
            record["checkpointed"] = self.checkpointed
        return record

    def trained(self, task: Task) -> Task:
        """``task`` set up to be trained as this spec says (micro-batches, checkpointed blocks)."""
        if task.micro_batch != 0:  # the estimate chooses a client's measured batches from the spec's
            raise ConfigError(f"{self.label}: the task sets its own micro_batch; give it as TaskSpec.micro_batch")
        if self.micro_batch:
            if not task.splittable:
                raise ConfigError(f"{self.label}: this task's loss is not a mean over samples; it cannot be "
                                  "trained in micro-batches")
            task.micro_batch = self.micro_batch
        blocks = checkpointable_blocks(task)
        if self.checkpointed > blocks:
            raise ConfigError(f"{self.label}: this task's model can have {blocks} blocks checkpointed (a zoo "
                              f"model whose loss runs it with its own weights), not {self.checkpointed}")
        if isinstance(task.model, BlockModel):
            task.model.checkpointed = self.checkpointed
        return task


@dataclass(frozen=True)
class Excluded:
    """Why a device takes no part this round, and the smallest task it was offered, if any (the
    memory a device needs to take part at all)."""

    reason: str
    spec: TaskSpec | None = None


@dataclass
class ClientResult:
    device: Device
    spec: TaskSpec
    local: LocalResult


class TaskError(ConfigError):
    """A task that cannot be trained at all (batch norm on one value per channel, say)."""


class CostStore(Protocol):
    """Where estimates computed elsewhere are found (another process of the suite: docs/ray.md).
    ``get`` gives None when the caller is to compute the estimate and ``put`` it."""

    def get(self, key: str) -> TaskCost | TaskError | None: ...

    def put(self, key: str, cost: TaskCost | TaskError) -> None: ...

    def release(self, key: str) -> None: ...


class Estimator:
    """Estimated task costs (training peak, FLOPs, bytes), computed once per distinct task (fake
    tensors, no compute); with a ``store``, once per suite across processes."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, batch_size: int,
                 optimizer: OptimizerConfig, steps: int, device: torch.device, allocator: bool = False,
                 store: CostStore | None = None) -> None:
        self.input_shape, self.num_classes, self.batch_size = input_shape, num_classes, batch_size
        self.optimizer, self.steps, self.device = optimizer, steps, device
        self.allocator = allocator  # also measure each task's allocator overhead on the GPU
        self.store = store
        self.costs: dict[str, TaskCost | TaskError] = {}  # by ``repr((key, batch sizes))``: alike in every process
        self._overhead: dict[Any, int] = {}  # per task, at the full batch

    def batch_sizes(self, samples: int | None, micro_batch: int = 0) -> tuple[int, ...]:
        """The batch sizes a client of ``samples`` samples is estimated (and measured) at, one step
        each: those that can hold its peak (``peak_batches``), so clients of every size share the
        full batch's estimate unless micro-batches make a short batch peak higher."""
        if samples is None:
            return (self.batch_size,)
        return peak_batches(epoch_sizes(samples, self.batch_size), micro_batch)

    def __call__(self, key: Any, build_task: Callable[[], Task], samples: int | None = None,
                 micro_batch: int = 0) -> TaskCost:
        sizes = self.batch_sizes(samples, micro_batch)
        name = repr((key, sizes))
        if name not in self.costs:
            found = self.store.get(name) if self.store is not None else None
            if found is None:
                try:
                    found = self._estimate(key, build_task, sizes)
                except BaseException:
                    if self.store is not None:  # the others need not wait for what this run will not post
                        self.store.release(name)
                    raise
                if self.store is not None:
                    self.store.put(name, found)
            self.costs[name] = found
        cost = self.costs[name]
        if isinstance(cost, TaskError):  # kept too: a task that cannot train is not tried again
            raise TaskError(*cost.args)
        return cost

    def _estimate(self, key: Any, build_task: Callable[[], Task], sizes: tuple[int, ...]) -> TaskCost | TaskError:
        try:
            cost = estimate_task(build_task, self.input_shape, self.num_classes, sizes, self.optimizer,
                                 device=self.device)
        except ValueError as err:  # torch refuses the step itself (batch norm on one value per channel)
            return TaskError(f"{key[-1].label if isinstance(key[-1], TaskSpec) else key} cannot be trained at "
                             f"batches {list(sizes)}: {str(err).splitlines()[0]}")
        if self.allocator:
            if key not in self._overhead:
                self._overhead[key] = allocator_overhead(  # the caching allocator settles after a first step
                    build_task, self.input_shape, self.num_classes, self.batch_size, self.optimizer,
                    max(2, self.steps), self.device)
            cost = dataclasses.replace(cost, overhead=self._overhead[key])
        return cost


def load_weights(model: ModuleT, state: Mapping[str, torch.Tensor]) -> ModuleT:
    """``model`` with ``state`` copied in (a client's copy of the server's weights), the tracker of
    the task being built set aside: copies into the model's existing tensors make none (nothing is
    counted here; the task's model is registered once built), and each would pay a dispatch."""
    with tracker_aside():
        model.load_state_dict(state)
    return model


@dataclass
class MethodContext:
    """What a method may know about the run it is part of."""

    model: ModelSpec
    width: float  # the suite's model width; methods scale relative to it
    input_shape: tuple[int, ...]
    num_classes: int
    fleet: list[Device]
    seed: int
    device: torch.device
    estimator: Estimator
    client_labels: dict[int, list[int]] = field(default_factory=dict)  # device id -> label histogram
    rounds: int = 1  # the run's rounds, for schedules over the run (a resume that adds rounds changes it)

    def samples(self, device: Device | None) -> int | None:
        """How many samples a device's client holds (None: not known, as in ``harness memory``)."""
        labels = self.client_labels.get(device.id) if device is not None else None
        return sum(labels) if labels else None

    def build_model(self, width: float = 1.0, norm_layer: NormLayer = nn.BatchNorm2d) -> BlockModel:
        return made_aside(lambda: build_model(self.model, self.width * width, norm_layer))


@dataclass
class NoParams:
    """For methods without parameters of their own."""


class Method(ABC):
    """Base class of every registered method; subclasses set ``Params`` to their dataclass."""

    Params: ClassVar[type] = NoParams
    respects_budgets: bool = True  # False only for the unconstrained reference (plain FedAvg)
    # Where the method knows one: the likely cause of its evaluated accuracy staying at chance while
    # its clients' training loss falls. Recorded in each run's manifest; reports quote it.
    chance_cause: ClassVar[str] = ""
    # The kind of method, for reports that draw one panel per kind ("width scaling"); recorded in
    # each run's manifest.
    family: ClassVar[str] = "other"

    def __init__(self, params: Any, ctx: MethodContext) -> None:
        self.params = params
        self.ctx = ctx
        self._task_traits: dict[TaskSpec, tuple[bool, int]] = {}

    @classmethod
    def parse_params(cls, raw: dict[str, Any], where: str = "params") -> Any:
        try:
            return from_dict(cls.Params, raw, where)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {err}") from None

    # -- planning ----------------------------------------------------------------------------
    @abstractmethod
    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        """What ``device`` would train in round ``rnd`` (or why it cannot take part)."""

    def cost(self, spec: TaskSpec, device: Device | None = None) -> TaskCost:
        """What ``spec`` costs a client (of ``device``: at the batch it can form): its training
        peak, FLOPs per sample and bytes exchanged."""
        return self.ctx.estimator((type(self), self.params_key(), spec), lambda: spec.trained(self.build_task(spec)),
                                  self.ctx.samples(device), spec.micro_batch)

    def estimate(self, spec: TaskSpec, device: Device | None = None) -> MemoryReport:
        return self.cost(spec, device).memory

    def need(self, spec: TaskSpec, device: Device | None = None) -> int:
        """The bytes the memory gate holds against the device's budget: the estimated peak, plus
        the GPU allocator's measured overhead with ``measure.gate = "allocator"``."""
        return self.cost(spec, device).need

    def flops_per_sample(self, spec: TaskSpec) -> float:
        """FLOPs per sample of a training step of ``spec``, as the device time model counts them;
        a method whose steps vary (FjORD's sampled width) gives their expected value."""
        return self.cost(spec).flops_per_sample

    def params_key(self) -> Any:
        return repr(self.params)

    def largest_fitting(self, specs: Iterable[TaskSpec], device: Device) -> TaskSpec | Excluded:
        """The first of ``specs`` (ordered largest first) whose estimate fits the device's budget."""
        smallest, failed = None, None
        for spec in specs:
            try:
                need = self.need(spec, device)
            except TaskError as err:  # e.g. micro-batches of one through batch norm on 1x1 maps
                failed = err
                continue
            if need <= device.budget:
                return spec
            smallest = (spec, need)
        if smallest is None and failed is not None:
            raise failed
        if smallest is None:
            return Excluded("the method offers no task")
        spec, need = smallest
        return Excluded(over_budget(device, spec, need), spec)

    def fitting(self, spec: TaskSpec, device: Device, micro_batches: Iterable[int] = (),
                checkpoint: bool = False) -> TaskSpec | Excluded:
        """The first of ``spec``'s ``fitting_options`` that fits the device, or why none does."""
        return self.largest_fitting(self.fitting_options(spec, micro_batches, checkpoint), device)

    def fitting_options(self, spec: TaskSpec, micro_batches: Iterable[int] = (),
                        checkpoint: bool = False) -> list[TaskSpec]:
        """The ways to train ``spec`` that its task allows, in order of preference: whole batches,
        then each micro-batch of ``micro_batches`` below the suite's batch, largest first (batch-norm
        statistics over more samples), each, with ``checkpoint``, with 0, 1, ... leading blocks
        checkpointed (the fewest recomputed)."""
        splittable, blocks = self.task_traits(spec)
        batch = self.ctx.estimator.batch_size
        sizes = [0, *sorted({m for m in micro_batches if m < batch}, reverse=True)] if splittable else [0]
        depths = range(blocks + 1) if checkpoint else [0]
        return [dataclasses.replace(spec, micro_batch=m, checkpointed=k) for m in sizes for k in depths]

    def task_traits(self, spec: TaskSpec) -> tuple[bool, int]:
        """Whether ``spec``'s task may be split into micro-batches, and how many of its blocks may
        be checkpointed; from one build under fake tensors (no memory), cached."""
        if spec not in self._task_traits:
            with FakeTensorMode():
                task = self.build_task(spec)
            self._task_traits[spec] = task.splittable, checkpointable_blocks(task)
        return self._task_traits[spec]

    def trained_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        """The client's task as the harness trains it: ``client_task`` set up as ``spec`` says."""
        return spec.trained(self.client_task(rnd, device, spec))

    # -- building and training ---------------------------------------------------------------
    @abstractmethod
    def build_task(self, spec: TaskSpec) -> Task:
        """A fresh task for ``spec`` (weights need not be the global ones). Also runs under
        fake tensors for the estimate, so it must only build modules."""

    @abstractmethod
    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        """The task a client trains this round: ``build_task(spec)`` with the global weights."""

    @abstractmethod
    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        """Fold the clients' uploads into the global state."""

    @abstractmethod
    def eval_models(self) -> dict[str, nn.Module | None]:
        """Models to evaluate after the round, headline (deployable) model first; ``None`` for a
        model that does not exist yet (recorded as null accuracy)."""

    def memory_specs(self) -> list[TaskSpec]:
        """The tasks ``python -m harness memory --method`` tabulates (e.g. every stage or width)."""
        return [TaskSpec("full")]

    @property
    def calibrates(self) -> bool:
        """Whether ``calibrate`` needs the training data (by default: when it is overridden)."""
        return type(self).calibrate is not Method.calibrate

    def calibrate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:  # noqa: B027 (optional hook)
        """Before evaluation, a pass over the training data (no augmentation) for methods that
        gather statistics at the server, as HeteroFL's static BN does. Only called when
        ``calibrates``."""

    def round_info(self, rnd: int) -> dict[str, Any]:
        """Extra fields for the round record (e.g. the stage trained)."""
        return {}

    # -- resume ------------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue after the last aggregated round."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class GlobalModelMethod(Method):
    """A method whose whole server state is one global model, ``self.model``, evaluated as is."""

    model: nn.Module

    def eval_models(self) -> dict[str, nn.Module | None]:
        return {"global": self.model}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


def over_budget(device: Device, spec: TaskSpec, need: int) -> str:
    return (f"budget {device.budget / MB:.2f} MB < {need / MB:.2f} MB estimated for "
            f"{spec.label}")


MethodClass = type[Method]
# filled by the method modules (baselines, neulite, FL_HARNESS_PLUGINS), which harness.plugins imports
# for the entry points (harness.suites, the command line, a Ray worker)
METHODS: Registry[MethodClass] = Registry("method")


def register_method(name: str) -> Callable[[MethodClass], MethodClass]:
    """``@register_method("name")`` on a ``Method`` subclass makes it usable from suite files."""

    def add(cls: MethodClass) -> MethodClass:
        if not dataclasses.is_dataclass(cls.Params):
            raise TypeError(f"{cls.__name__}.Params must be a dataclass")
        return METHODS.register(name)(cls)

    return add


def client_weights(results: list[ClientResult], by_samples: bool) -> list[float]:
    """FedAvg's weights: each client's sample count, or 1 each for a plain mean."""
    return [r.local.num_samples if by_samples else 1 for r in results]


def weighted_average(states: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """FedAvg of state dicts; integer buffers (BN's batch counters) take the weighted mean rounded."""
    total = float(sum(weights))
    out = {}
    for key, first in states[0].items():
        acc = sum(s[key].double() * (w / total) for s, w in zip(states, weights))
        out[key] = acc.round().to(first.dtype) if not first.is_floating_point() else acc.to(first.dtype)
    return out
