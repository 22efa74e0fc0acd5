"""Width sub-models: a narrower twin's tensors as index sets into the global model's tensors.

A width-r twin of a zoo model has the same state_dict keys as the global model; only channel
dimensions shrink. Every shrunk dimension of global size ``C`` kept at ``k`` channels takes the
index set ``pick(C, k)``. Because the set depends on ``(C, k)`` alone, a layer's input indices
equal the previous layer's output indices, and everything a ResNet adds together (a unit's output,
its shortcut, the next unit's input) shares one set. Dimensions that do not shrink (image channels,
class outputs, kernel sizes) are kept whole. The client then holds a real, smaller model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

Pick = Callable[[int, int], torch.Tensor]  # (global size C, kept k) -> k channel indices
Shapes = dict[str, torch.Size]
# A client's weight in an average: one number, or per key either one number or one weight per entry
# it holds (in the order of ``SubModel.flat_index``), as FedRolex's counted averaging gives it.
Weight = float | Mapping[str, float | torch.Tensor]
Upload = tuple["SubModel", dict[str, torch.Tensor], Weight]


def leftmost(size: int, keep: int) -> torch.Tensor:
    """HeteroFL and FjORD: the first ``keep`` channels."""
    return torch.arange(keep)


def rolling(offset: int) -> Pick:
    """FedRolex: a window of ``keep`` channels starting at ``offset mod C``, wrapping around."""

    def pick(size: int, keep: int) -> torch.Tensor:
        return (offset + torch.arange(keep)) % size

    return pick


def shapes_of(model: nn.Module) -> Shapes:
    return {k: v.shape for k, v in model.state_dict().items()}


def twin_shapes(build: Callable[[], nn.Module]) -> Shapes:
    """The state shapes of a model, built on the meta device (no memory, no compute)."""
    with torch.device("meta"):
        return shapes_of(build())


@dataclass
class SubModel:
    """Per state key the twin holds, per dimension: the global indices its tensor holds (None: all).
    A twin may lack keys of the global model (FjORD's statistics of wider widths)."""

    index: dict[str, tuple[torch.Tensor | None, ...]]

    @classmethod
    def of(cls, full: Shapes, sub: Shapes, pick: Pick) -> SubModel:
        index = {}
        for key, shape in sub.items():
            if key not in full or len(shape) != len(full[key]):
                raise ValueError(f"{key}: the twin has shape {tuple(shape)}, the model {full.get(key)}")
            index[key] = tuple(None if k == c else pick(c, k) for c, k in zip(full[key], shape, strict=True))
        return cls(index)

    def with_rows(self, keys: list[str], rows: torch.Tensor) -> SubModel:
        """This sub-model holding only ``rows`` of the first dimension of ``keys`` (kept whole in the
        twin): HeteroFL's label split, where a client's classifier rows are those of its classes."""
        index = dict(self.index)
        for key in keys:
            if index[key][0] is not None:
                raise ValueError(f"{key}: its first dimension is already cut")
            index[key] = (rows, *index[key][1:])
        return SubModel(index)

    def extract(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The twin's tensors, copied out of the global ``state``."""
        out = {}
        for key, where in self.index.items():
            t = state[key]
            for dim, idx in enumerate(where):
                if idx is not None:
                    t = t.index_select(dim, idx)
            out[key] = t.clone()
        return out

    def flat_index(self, key: str, shape: torch.Size) -> torch.Tensor:
        """Positions in the flattened global tensor of ``shape`` that the twin's tensor covers."""
        flat = torch.zeros((), dtype=torch.long)
        stride = 1
        for dim in reversed(range(len(shape))):
            idx = self.index[key][dim]
            idx = torch.arange(shape[dim]) if idx is None else idx
            view = [1] * len(shape)
            view[dim] = -1
            flat = flat + idx.view(view) * stride
            stride *= shape[dim]
        return flat.reshape(-1)


def entry_weights(weight: Weight, key: str, pos: torch.Tensor) -> torch.Tensor:
    """A client's weight for each entry of ``key`` it holds, in float64."""
    own = weight[key] if isinstance(weight, Mapping) else weight
    if isinstance(own, torch.Tensor):
        return own.double()
    return torch.full(pos.shape, float(own), dtype=torch.float64)


def aggregate(state: dict[str, torch.Tensor], uploads: list[Upload]) -> dict[str, torch.Tensor]:
    """Each global entry becomes the weighted mean of the clients that trained it; entries nobody
    trained keep their value. Computed as ``harness.methods.weighted_average`` computes it, so
    full-width uploads reproduce FedAvg bit for bit. An upload holds the entries its sub-model
    indexes (with ``with_rows``, a row subset of its tensor)."""
    out = {}
    for key, g in state.items():
        holders = [(pos, s[key], entry_weights(w, key, pos))
                   for sub, s, w in uploads if key in sub.index
                   for pos in (sub.flat_index(key, g.shape),)]
        total = torch.zeros(g.numel(), dtype=torch.float64)
        for pos, _, w in holders:
            total.index_add_(0, pos, w)
        acc = torch.zeros(g.numel(), dtype=torch.float64)
        for pos, value, w in holders:
            acc.index_add_(0, pos, value.double().reshape(-1) * (w / total[pos]))
        mean = torch.where(total > 0, acc, g.double().reshape(-1)).reshape(g.shape)
        out[key] = mean.to(g.dtype) if g.is_floating_point() else mean.round().to(g.dtype)
    return out


def counted(uploads: list[Upload], counts: dict[str, torch.Tensor], shapes: Shapes) -> list[Upload]:
    """FedRolex's server rule for the entries in ``counts`` (flat float64 update counts, starting at
    1): a client's weight for an entry is the entry's count when its turn comes, and the count grows
    by one with each client that holds it, inside the round. Three clients holding an entry first
    in round 1 weigh 1, 2 and 3. Other entries keep the client's own weight. ``counts`` is updated."""
    out: list[Upload] = []
    for sub, state, weight in uploads:
        weights: dict[str, float | torch.Tensor] = dict.fromkeys(sub.index, weight)
        for key in counts.keys() & sub.index.keys():
            pos = sub.flat_index(key, shapes[key])
            weights[key] = counts[key][pos]  # a copy: index with a tensor gathers
            counts[key][pos] += 1  # a sub-model holds each entry once
        out.append((sub, state, weights))
    return out
