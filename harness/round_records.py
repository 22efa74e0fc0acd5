"""Recording a round: a client's line and the round's line (docs/records.md), built from what the
round planned and what its clients returned; the engine writes them."""

from __future__ import annotations

from typing import Any

from harness.memory import MemoryReport
from harness.methods import ClientResult
from harness.planning import Candidate


def client_row(run: dict[str, Any], rnd: int, c: Candidate) -> dict[str, Any]:
    """A device's line before it trains (``run``: the run's label, method and seed)."""
    row = {"round": rnd, **run, "device": c.device.id, "budget": c.device.budget,
           "status": "excluded" if c.reason else "trained", "reason": c.reason, "task": None,
           "estimate": c.estimate.to_record() if c.estimate else None}
    if c.spec is not None:
        row.update(c.spec.to_record())
        if c.need != c.estimate.peak:  # the allocator gate's estimate plus overhead
            row["need"] = c.need
    return row


def trained_fields(result: ClientResult, estimate: MemoryReport) -> dict[str, Any]:
    """A trained client's record. Its peak is the measured one, or, for a client not measured
    (its task shape was), its task's estimate (``memory`` null, ``measured`` false)."""
    local = result.local
    measured = bool(local.memory)
    peak = local.memory["tensor"]["peak"] if measured else estimate.peak
    return {"memory": local.memory or None, "measured": measured, "over_budget": peak > result.device.budget,
            "samples": local.num_samples, "steps": local.steps, "train_loss": local.train_loss,
            "train_time": local.train_time, "bytes_up": local.bytes_up, "bytes_down": local.bytes_down}


def round_row(run: dict[str, Any], rnd: int, candidates: list[Candidate], chosen: set[int],
              results: list[ClientResult], evals: dict[str, tuple[float | None, float | None]],
              times: dict[str, float], info: dict[str, Any]) -> dict[str, Any]:
    """The round's line: its evaluations, who could and did take part, peaks, times (``times``: the
    round's and the run's cumulative host and device seconds) and the method's own fields (``info``)."""
    trained = {r.device.id for r in results}
    estimates = [c.estimate.peak for c in candidates if c.device.id in trained]
    headline = next(iter(evals.values()), (None, None))
    offered = [c for c in candidates if not c.reason]  # plain FedAvg offers its task to every device
    eligible = sum(c.need <= c.device.budget for c in offered)
    return {
        "round": rnd, **run, "accuracy": headline[0], "loss": headline[1],
        "evals": {name: {"accuracy": acc, "loss": loss} for name, (acc, loss) in evals.items()},
        "devices": len(candidates), "eligible": eligible, "offered": len(offered),
        "selected": len(chosen), "participated": len(results), "excluded": len(candidates) - len(offered),
        "peak_tensor": max((r.local.memory["tensor"]["peak"] for r in results if r.local.memory), default=None),
        "peak_estimate": max(estimates, default=None),
        "train_time": sum(r.local.train_time for r in results), **times,
        "bytes_up": sum(r.local.bytes_up for r in results),
        "bytes_down": sum(r.local.bytes_down for r in results), **info,
    }


def unselected_summary(candidates: list[Candidate]) -> dict[str, Any]:
    """The devices a round did not select, as counts (``client_lines = "selected"``): per task
    offered (its estimate and gate bytes), how many devices were offered it and how many it fits;
    and the exclusions by kind. Enough for what the reports take from client lines: the fleet that
    fits, the smallest and largest task, the stages."""
    tasks: dict[tuple, dict[str, Any]] = {}
    exclusions: dict[str, int] = {}
    for c in candidates:
        spec = c.spec.to_record() if c.spec is not None else {"task": None}
        peak = c.estimate.peak if c.estimate is not None else None
        group = tasks.setdefault(repr((spec, peak, c.need)),
                                 {**spec, "estimate": peak, "need": c.need, "devices": 0, "fit": 0})
        group["devices"] += 1
        group["fit"] += c.need is not None and c.need <= c.device.budget
        if c.reason:
            kind = "over budget" if c.need is not None and c.need > c.device.budget else c.reason
            exclusions[kind] = exclusions.get(kind, 0) + 1
    return {"unselected": list(tasks.values()), "exclusions": exclusions}
