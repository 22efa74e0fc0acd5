"""Normalised HSIC with Gaussian kernels (NEULITE.md section 3), batched and in float32.

The curriculum mentor rewards a stage for keeping information about the input and for being
predictive of the labels; nHSIC measures both dependences without any density estimate.
"""

from __future__ import annotations

import torch

# Guards 0/0 when a batch carries no variation (one sample, or one label only): nHSIC is then 0.
TINY = 1e-30


def gaussian_kernel(a: torch.Tensor, sigma: float) -> torch.Tensor:
    """``exp(-||a_i - a_j||^2 / (2 sigma^2 d))`` for rows of ``a`` (``(..., m, d)`` -> ``(..., m, m)``).

    Dividing by the width ``d`` keeps one ``sigma`` meaningful for inputs, features and labels."""
    a = a.float()
    sq = (a * a).sum(-1)
    dist = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * (a @ a.transpose(-1, -2))).clamp_min(0)
    return torch.exp(dist / (-2.0 * sigma**2 * a.shape[-1]))


def centred_kernel(a: torch.Tensor, sigma: float) -> torch.Tensor:
    """``H K_A H`` with ``H = I - 11^T/m``, without forming ``H``."""
    k = gaussian_kernel(a, sigma)
    return k - k.mean(-1, keepdim=True) - k.mean(-2, keepdim=True) + k.mean((-2, -1), keepdim=True)


def hsic_centred(ca: torch.Tensor, cb: torch.Tensor) -> torch.Tensor:
    """``tr(K_A H K_B H) / m^2`` from centred kernels (``H`` is idempotent). Centring both sides
    keeps rounding symmetric, so a constant batch gives exactly 0 rather than noise."""
    return (ca * cb).sum((-2, -1)) / ca.shape[-1] ** 2


def nhsic(a: torch.Tensor, b: torch.Tensor, sigma: float) -> torch.Tensor:
    """``HSIC(A, B) / sqrt(HSIC(A, A) HSIC(B, B))`` for paired rows of ``a`` and ``b``."""
    ca, cb = centred_kernel(a, sigma), centred_kernel(b, sigma)
    return hsic_centred(ca, cb) / (hsic_centred(ca, ca) * hsic_centred(cb, cb)).clamp_min(TINY).sqrt()
