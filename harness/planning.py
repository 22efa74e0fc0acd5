"""Planning a round: every device's task and estimate, the memory gate, and which devices train."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.fleet import Device
from harness.memory import MemoryReport
from harness.methods import Excluded, Method, TaskSpec, over_budget
from harness.seeds import derived_seed


@dataclass
class Candidate:
    device: Device
    position: int  # index into the fleet and the partition
    spec: TaskSpec | None  # the task offered (for an excluded device: the smallest one, if any)
    estimate: MemoryReport | None
    need: int | None  # the bytes the memory gate holds against the budget (the estimate, plus on a GPU
    # with measure.gate = "allocator" the allocator's overhead); None without a task
    reason: str = ""


def plan_round(method: Method, rnd: int, fleet: list[Device]) -> list[Candidate]:
    """Every device's task and estimate; the memory gate excludes a task over the budget."""
    candidates = []
    for position, device in enumerate(fleet):
        choice = method.choose(rnd, device)
        if isinstance(choice, Excluded):
            spec = choice.spec  # the smallest task offered, if any: what the device would need to take part
            if spec is None:
                candidates.append(Candidate(device, position, None, None, None, choice.reason))
            else:
                candidates.append(Candidate(device, position, spec, method.estimate(spec, device),
                                            method.need(spec, device), choice.reason))
            continue
        estimate, need = method.estimate(choice, device), method.need(choice, device)
        reason = ""
        if method.respects_budgets and need > device.budget:
            reason = over_budget(device, choice, need)
        candidates.append(Candidate(device, position, choice, estimate, need, reason))
    return candidates


def select(candidates: list[Candidate], k: int, policy: str, seed: int, rnd: int) -> set[int]:
    """Positions sampled to train: ``k`` from those offered a task (``eligible``) or from all (``uniform``)."""
    pool = [c.position for c in candidates if not c.reason or policy == "uniform"]
    return sample(pool, k, seed, rnd)


def sample(pool: list[int], k: int, seed: int, rnd: int) -> set[int]:
    """``k`` of ``pool`` drawn for round ``rnd`` of the run seeded ``seed``."""
    g = torch.Generator().manual_seed(derived_seed(seed, rnd, 0xC11E47))
    return {pool[i] for i in torch.randperm(len(pool), generator=g)[:k].tolist()}
