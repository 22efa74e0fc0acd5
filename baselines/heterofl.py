"""HeteroFL (Diao et al., ICLR 2021) and FedRolex (Alam et al., NeurIPS 2022), as their code does them.

HeteroFL: static nested sub-models (each layer's leftmost channels) at rates such as 1, 1/2, ...,
1/16; static BN (batch statistics in training, the global model's statistics gathered over the
training data before evaluation); a scaler that divides activations by the rate in training; the
masked cross-entropy (logits of classes absent from a client's data set to 0); and the reference's
``combine``: each entry is the plain mean over the clients that trained it, and each row of the
classifier over the clients whose data hold that class (label split). FedRolex keeps all of that
but rolls each layer's window of channels by one every round (mod the layer's width), so every
global parameter is trained evenly, and evaluates with each test batch's own statistics, as its
code does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from baselines.norms import static_norm
from baselines.submodel import Pick, SubModel, Upload, counted, rolling
from baselines.width import WidthMethod, WidthParams
from harness.fleet import Device
from harness.methods import ClientResult, TaskSpec, register_method
from harness.models.base import NormLayer
from harness.training import LossFn, Task

BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass
class HeteroFLParams(WidthParams):
    weighted: bool = False  # the reference averages each entry over its clients, unweighted
    scaler: bool = True
    masked_ce: bool = True  # label skew: logits of classes absent from the client's data are masked out
    label_split: bool = True  # classifier rows averaged only over the clients that hold the class
    global_bn_stats: bool = True  # evaluate with BN statistics gathered over the training data (sBN)


def masked_cross_entropy(label_counts: list[int], device: torch.device) -> LossFn:
    """HeteroFL's masked loss: logits of classes absent from the client's data are set to 0."""
    absent = torch.tensor([c == 0 for c in label_counts], device=device)

    def loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(model(x).masked_fill(absent, 0.0), y)

    return loss


@register_method("heterofl")
class HeteroFL(WidthMethod):
    Params = HeteroFLParams

    def __init__(self, params: HeteroFLParams, ctx) -> None:
        super().__init__(params, ctx)
        self.eval_model: nn.Module = self.model  # replaced by ``calibrate`` before each evaluation
        self.classifier = [f"head.fc.{name}" for name, _ in self.model.head.fc.named_parameters()]

    def norm(self, rate: float) -> NormLayer:
        return static_norm(rate if self.params.scaler else 1.0)

    def build_task(self, spec: TaskSpec) -> Task:
        task = super().build_task(spec)
        if self.params.masked_ce:  # the estimate runs the same masking, with no class absent
            task.loss = masked_cross_entropy([1] * self.ctx.num_classes, self.ctx.device)
        return task

    def client_task(self, rnd: int, device: Device, spec: TaskSpec) -> Task:
        task = super().client_task(rnd, device, spec)
        if self.params.masked_ce:
            task.loss = masked_cross_entropy(self.ctx.client_labels[device.id], self.ctx.device)
        return task

    def held(self, rnd: int, result: ClientResult) -> tuple[SubModel, dict[str, torch.Tensor]]:
        """With ``label_split``, a client's classifier rows are those of the classes in its data."""
        sub, state = super().held(rnd, result)
        if not self.params.label_split:
            return sub, state
        counts = torch.tensor(self.ctx.client_labels[result.device.id])
        rows = counts.nonzero().flatten()
        return sub.with_rows(self.classifier, rows), {
            **state, **{key: state[key].index_select(0, rows) for key in self.classifier}}

    @property
    def calibrates(self) -> bool:
        """With ``global_bn_stats = false`` the global model normalises with each test batch's
        statistics, and no pass over the training data is made."""
        return self.params.global_bn_stats

    def calibrate(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> None:
        """HeteroFL's static BN at inference: a full-width twin with tracked BatchNorm gathers the
        global model's statistics over the training data (cumulative average), then evaluates."""
        twin = self.ctx.build_model(1.0)
        for module in twin.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.momentum = None
        missing, unexpected = twin.load_state_dict(self.model.state_dict(), strict=False)
        if unexpected or not all(k.endswith(BN_STATS) for k in missing):
            raise RuntimeError(f"the tracked-BN twin does not match the global model: {missing} {unexpected}")
        twin.train()
        with torch.no_grad():
            for x, _ in batches:
                twin.to(x.device)(x)
        self.eval_model = twin.cpu()

    def eval_models(self) -> dict[str, nn.Module | None]:
        return {"global": self.eval_model}


@dataclass
class FedRolexParams(HeteroFLParams):
    global_bn_stats: bool = False  # FedRolex's code evaluates with the test batches' statistics
    # "counted": the reference server's weighting of norm-layer entries, biases and the classifier
    # by each entry's running update count (``counted``); "plain": every entry a plain mean.
    averaging: Literal["counted", "plain"] = "counted"


def window_offset(rnd: int) -> int:
    """Round 1 starts at channel 0 (HeteroFL's window); each round moves it by one."""
    return rnd - 1


@register_method("fedrolex")
class FedRolex(HeteroFL):
    Params = FedRolexParams

    def __init__(self, params: FedRolexParams, ctx) -> None:
        super().__init__(params, ctx)
        # The reference counts every entry but weighs only these by their count: the one-dimensional
        # ones (norm weights and biases, biases) and the classifier; convolutions are plain means.
        self.counts = {key: torch.ones(value.numel(), dtype=torch.float64)
                       for key, value in self.model.state_dict().items()
                       if value.dim() <= 1 or key in self.classifier}

    def pick(self, rnd: int) -> Pick:
        return rolling(window_offset(rnd))

    def uploads(self, rnd: int, results: list[ClientResult]) -> list[Upload]:
        uploads = super().uploads(rnd, results)
        if self.params.averaging == "plain":
            return uploads
        return counted(uploads, self.counts, self.full)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "counts": self.counts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.counts = {key: count.clone() for key, count in state["counts"].items()}
