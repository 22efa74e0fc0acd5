"""Baseline methods; importing this package registers them."""

from baselines import fedavg  # noqa: F401  (registration)
