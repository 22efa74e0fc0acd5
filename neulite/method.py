"""NeuLite (Wu et al. 2024): memory-efficient FL by elastic progressive training, as a harness method.

Each round trains one stage (see ``schedule``); only devices whose budget covers that stage's
estimated peak take part. The server keeps every stage's model (blocks 1..t plus its output module)
and aggregates the trained one; the full model (stage T) is the deployable, headline model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.config import ConfigError
from harness.fleet import Device
from harness.methods import (
    ClientResult,
    Excluded,
    Method,
    MethodContext,
    TaskSpec,
    client_weights,
    load_weights,
    register_method,
    weighted_average,
)
from harness.training import Task
from neulite.harmonizer import refresh
from neulite.mentor import MentorLoss
from neulite.params import NeuLiteParams
from neulite.schedule import Cyclic, Sequential, proportional_rounds
from neulite.stages import StageModel


def trained_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a client sends back: what training changed, i.e. its trainable parameters and the
    buffers (norm statistics) of modules that ran in training mode. The rest of the frozen blocks is
    an unchanged copy of the server's, so it stays home."""
    changed = {name for name, p in model.named_parameters() if p.requires_grad}
    changed |= {name for name, _ in model.named_buffers() if model.get_submodule(name.rpartition(".")[0]).training}
    return {key: value for key, value in model.state_dict().items() if key in changed}


@register_method("neulite")
class NeuLite(Method):
    family = "progressive"
    Params = NeuLiteParams

    def __init__(self, params: NeuLiteParams, ctx: MethodContext) -> None:
        super().__init__(params, ctx)
        first = ctx.build_model()
        self.num_stages = first.num_blocks
        self.lambdas = params.lambdas(self.num_stages)
        block_sizes = [sum(p.numel() for p in b.parameters()) for b in first.blocks]
        self.stages = [self._stage_model(first if t == 1 else ctx.build_model(), t)
                       for t in range(1, self.num_stages + 1)]
        self.schedule = self._schedule(block_sizes)
        self.trained_in = [0] * self.num_stages  # per stage, the last round it was aggregated
        self.round, self.current = 0, 1

    @property
    def full_trained(self) -> bool:
        return self.trained_in[-1] > 0

    def _schedule(self, block_sizes: list[int]) -> Cyclic | Sequential:
        p, stages = self.params, self.num_stages
        if p.schedule == "cyclic":
            return Cyclic(stages)
        if p.stage_rounds and len(p.stage_rounds) not in (1, stages):
            raise ConfigError(f"neulite stage_rounds: give 1 or {stages} values (one per stage of "
                              f"{self.ctx.model.name}), got {p.stage_rounds}")
        rounds = (p.stage_rounds * stages if len(p.stage_rounds) == 1 else list(p.stage_rounds)) \
            if p.stage_rounds else proportional_rounds(p.sequential_rounds, block_sizes)
        return Sequential(rounds, p.movement_threshold, p.movement_window)

    def _stage_model(self, model: nn.Module, stage: int) -> StageModel:
        projection = self.lambdas[stage - 1][1] > 0  # the head exists only for the label term
        return StageModel(model, stage, self.params.effective_overlap, projection, self.params.frozen_bn,
                          self.params.output_bias)

    # -- planning ------------------------------------------------------------------------------
    def _begin(self, rnd: int) -> None:
        """Once per round: fix the stage and refresh its model before any client copies it."""
        if rnd != self.round:
            self.round, self.current = rnd, self.schedule.stage(rnd)
            refresh(self.stages, self.current, self.full_trained, from_full=self.params.harmonizer)

    def choose(self, rnd: int, device: Device) -> TaskSpec | Excluded:
        self._begin(rnd)
        return self.largest_fitting([TaskSpec("stage", self.current)], device)

    def memory_specs(self) -> list[TaskSpec]:
        return [TaskSpec("stage", t) for t in range(1, self.num_stages + 1)]

    def round_info(self, rnd: int) -> dict[str, Any]:
        return {"stage": self.current}

    # -- building and training -----------------------------------------------------------------
    def build_task(self, spec: TaskSpec) -> Task:
        stage = int(spec.value)
        lambda1, lambda2 = self.lambdas[stage - 1]
        loss = MentorLoss(lambda1, lambda2, self.params.sigma, self.ctx.num_classes)
        return Task(self._stage_model(self.ctx.build_model(), stage), loss, trained_state,
                    splittable=False)  # the mentor's HSIC terms are statistics of the whole batch

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = self.build_task(spec)
        load_weights(task.model, self.stages[int(spec.value) - 1].state_dict(keep_vars=True))
        return task

    def aggregate(self, rnd: int, results: list[ClientResult]) -> None:
        stage = int(results[0].spec.value)
        weights = client_weights(results, self.params.weighted)
        model = self.stages[stage - 1]
        state = model.state_dict()
        state.update(weighted_average([r.local.state for r in results], weights))
        model.load_state_dict(state)
        self.trained_in[stage - 1] = rnd
        self.schedule.observe(model.blocks[stage - 1])

    def eval_models(self) -> dict[str, nn.Module | None]:
        """The full model, which is stage T as last trained (the deployable model; ``None`` until
        stage T has trained once), and this round's stage model with its output module."""
        return {"full": self.stages[-1] if self.full_trained else None,
                "stage": self.stages[self.current - 1]}

    # -- resume --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"stages": [m.state_dict() for m in self.stages], "trained_in": list(self.trained_in),
                "schedule": self.schedule.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for model, stage_state in zip(self.stages, state["stages"], strict=True):
            model.load_state_dict(stage_state)
        self.trained_in = list(state["trained_in"])
        self.schedule.load_state_dict(state["schedule"])
