"""The ``tensor`` memory source: exact live tensor bytes during training, by category.

A ``TorchDispatchMode`` sees every tensor an aten op returns; each new storage is counted once and
released by a weak-reference callback when it dies. The client's task is built under the tracker, so
whatever the task keeps besides its model (a copy of the global weights, a control variate, a
teacher), however a method holds it, is counted as ``state``; the model's parameters and buffers and
the input batch are registered by name. The harness's models are constructed with the tracker set
aside (``made_aside``: their many small ops are a large share of a small client's dispatches) and
their tensors counted once made. Each storage carries the ticks of its birth and death
on a clock that advances at every storage counted or freed, so the peak is one tick; the storages
live at it are named once the step has finished and it is known which became gradients or
optimizer state. The same tracker runs under ``FakeTensorMode`` for the estimate, so estimate and
measurement count the very same tensors.

Unlike torch's ``MemTracker`` it needs no hooks on parameters, so frozen blocks work.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode_stack, _pop_mode_temporarily

# Ops whose output aliases a tensor made outside the dispatcher (``torch.tensor(...)``): new memory,
# although their schema says alias. Other aliasing outputs (views, in-place results) are storages
# that already exist, e.g. the server's global weights that a client's state_dict() reads.
FRESH_ALIASES = {torch.ops.aten.lift_fresh.default}
PRUNE_SLACK = 4096  # storages the tracker holds, beyond twice those kept at the last pruning, before pruning again
CATEGORIES = ("parameters", "buffers", "gradients", "optimizer", "state", "activations", "other")
ModuleT = TypeVar("ModuleT", bound=nn.Module)
MODULE_INTERNALS = frozenset(vars(nn.Module()))  # every module's; its _parameters and _buffers are read apart
PHASE_CATEGORY = {"build": "state", "forward": "activations", "backward": "other", "optimizer": "other",
                  "input": "other"}


@dataclass
class MemoryReport:
    """A peak in bytes and what it was made of; ``categories`` sums to ``peak``."""

    peak: int = 0
    categories: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))

    def to_record(self) -> dict[str, int]:
        return {"peak": self.peak, **self.categories}


@functools.cache
def _fresh_returns(func) -> tuple[int, ...] | None:
    """Which returns of ``func`` are new memory (they alias nothing, or alias a tensor made outside
    the dispatcher), read from the op's schema once: None for an op of one such return (most ops),
    else their positions (none: a view, an in-place op)."""
    returns = func._schema.returns
    fresh = tuple(i for i, ret in enumerate(returns) if ret.alias_info is None or func in FRESH_ALIASES)
    return None if fresh == (0,) and len(returns) == 1 else fresh


class _Storage:
    """What the tracker knows of one storage; outlives the storage so a peak can be named later."""

    __slots__ = ("born", "died", "key", "nbytes", "phase", "role")

    def __init__(self, nbytes: int, phase: str, role: str | None, born: int, key: int) -> None:
        self.nbytes, self.phase, self.role, self.born, self.key = nbytes, phase, role, born, key
        self.died = None

    def live_at(self, tick: int) -> bool:
        return self.born <= tick and (self.died is None or self.died > tick)

    @property
    def category(self) -> str:
        return self.role or PHASE_CATEGORY[self.phase]


class _Ref(weakref.ref):
    """A weak reference to a counted storage that knows what was counted, for its death callback."""

    __slots__ = ("info",)


def _tensors_in(value: object) -> list:
    """The tensors in ``value``: itself, or those in nested lists, tuples and dicts."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict | list | tuple):
        return [t for v in (value.values() if isinstance(value, dict) else value) for t in _tensors_in(v)]
    return []


def _storages(tensors: Iterable[torch.Tensor]) -> Iterator[torch.UntypedStorage]:
    for t in tensors:
        if isinstance(t, torch.Tensor):
            yield t.untyped_storage()


class TensorTracker(TorchDispatchMode):
    """Use as a context around training steps; read ``report()`` afterwards, ``close()`` when done."""

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, _Ref] = {}  # by the storage's id(), while it lives
        self._counted: list[_Storage] = []  # the storages counted: the live, and the dead until pruned
        self._prune_at = PRUNE_SLACK  # prune when this many are held
        self._clock = 0  # ticks at every storage counted or freed
        self._current = 0
        self._peak = 0
        self._peak_at = 0  # the tick of the peak
        self.phase = "forward"
        self._on_death = self._free  # bound once: every counted storage's callback

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        return False  # never compiled: spare every op torch's wrapper that keeps Dynamo out (~4% of a step)

    # -- counting ---------------------------------------------------------------------------
    def _add(self, storage: torch.UntypedStorage, phase: str, role: str | None = None) -> _Storage:
        key = id(storage)
        ref = self._live.get(key)
        if ref is not None and ref() is storage:
            if role is not None:
                ref.info.role = role
            return ref.info
        self._clock += 1
        info = _Storage(storage.nbytes(), phase, role, self._clock, key)
        ref = self._live[key] = _Ref(storage, self._on_death)
        ref.info = info
        self._counted.append(info)
        if len(self._counted) > self._prune_at:
            self._prune()
        self._current += info.nbytes
        if self._current > self._peak:
            self._peak, self._peak_at = self._current, self._clock
        return info

    def _prune(self) -> None:
        """Forget storages dead and not live at the peak: any later peak is at a later tick, when
        they are dead too (a task whose every step is measured would otherwise pile them up)."""
        self._counted = [i for i in self._counted if i.died is None or i.live_at(self._peak_at)]
        self._prune_at = 2 * len(self._counted) + PRUNE_SLACK  # what is kept, pruned again only when doubled

    def _free(self, ref: _Ref) -> None:
        info = ref.info
        self._clock += 1
        info.died = self._clock
        self._current -= info.nbytes
        if self._live.get(info.key) is ref:
            del self._live[info.key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        fresh = _fresh_returns(func)
        if fresh is None:
            if isinstance(out, torch.Tensor):  # most ops: one new tensor
                self._add(out.untyped_storage(), self.phase)
                return out
            values = (out,)
        else:
            values = [out[i] for i in fresh]
        for value in values:
            if isinstance(value, torch.Tensor):
                self._add(value.untyped_storage(), self.phase)
            elif isinstance(value, list | tuple):  # e.g. split's list of tensors
                for t in value:
                    if isinstance(t, torch.Tensor):
                        self._add(t.untyped_storage(), self.phase)
        return out

    # -- what the caller tells the tracker ---------------------------------------------------
    def reset_peak(self) -> None:
        """Count the peak from now on: what is live stays counted, earlier transients (building a
        task: a full model cut down to a stage, weights copied in) are not a peak of training."""
        self._peak, self._peak_at = self._current, self._clock

    def register_model(self, model: nn.Module) -> None:
        """Count the model's parameters (frozen ones too) and buffers, which predate tracking."""
        for storage in _storages(model.parameters()):
            self._add(storage, "input", "parameters")
        for storage in _storages(model.buffers()):
            self._add(storage, "input", "buffers")

    def count_module(self, module: nn.Module) -> None:
        """Count a module made outside the tracker (``made_aside``) as new in the current phase:
        its parameters, buffers and tensor attributes (also in nested lists, tuples and dicts),
        which is what a model's construction keeps. A tensor attribute counts wherever it was made
        (a constant shared by every client included): the client's device would hold it."""
        for m in module.modules():
            held = vars(m)
            for storage in _storages((*held["_parameters"].values(), *held["_buffers"].values())):
                self._add(storage, self.phase)
            for key in held.keys() - MODULE_INTERNALS:
                for storage in _storages(_tensors_in(held[key])):
                    self._add(storage, self.phase)

    def register_inputs(self, *tensors: torch.Tensor) -> None:
        for storage in _storages(tensors):
            self._add(storage, "input")

    def name_roles(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        """After a step: mark which storages are gradients and optimizer state."""
        for storage in _storages(p.grad for p in model.parameters() if p.grad is not None):
            self._add(storage, "backward", "gradients")
        if optimizer is not None:
            state = (t for s in optimizer.state.values() for t in s.values())
            for storage in _storages(state):
                self._add(storage, "optimizer", "optimizer")

    @contextmanager
    def phase_of(self, phase: str) -> Iterator[None]:
        previous, self.phase = self.phase, phase
        try:
            yield
        finally:
            self.phase = previous

    def report(self) -> MemoryReport:
        categories = dict.fromkeys(CATEGORIES, 0)
        for info in self._counted:
            if info.live_at(self._peak_at):
                categories[info.category] += info.nbytes
        return MemoryReport(self._peak, categories)

    def close(self) -> MemoryReport:
        """The final report. The weak references are dropped, so storages freed later (the client's
        model, its gradients) call nothing, and the tracker, a reference cycle through their
        callbacks, is freed with its last reference instead of at the next garbage collection."""
        self._live.clear()
        self._on_death = None
        return self.report()


@contextmanager
def tracker_aside() -> Iterator[TensorTracker | None]:
    """While a task is built, its tracker (the innermost mode) set aside and yielded, to count what
    was made; elsewhere nothing is set aside and None is yielded."""
    stack = _get_current_dispatch_mode_stack()
    tracker = stack[-1] if stack else None
    if not isinstance(tracker, TensorTracker) or tracker.phase != "build":
        yield None
        return
    with _pop_mode_temporarily():
        yield tracker


def made_aside(make: Callable[[], ModuleT]) -> ModuleT:
    """``make()``, a model's construction, with the tracker of the task being built set aside, and
    the model counted once made. Its hundreds of small ops (allocation, initialisation, fills)
    would each pay a Python dispatch; what they leave is the model's own tensors, and their
    transients are not a peak of training (``reset_peak`` follows the build)."""
    with tracker_aside() as tracker:
        module = make()
    if tracker is not None:
        tracker.count_module(module)
    return module
