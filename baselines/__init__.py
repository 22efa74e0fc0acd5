"""Baseline methods; importing this package registers them."""

from baselines import depthfl, fedavg, fedprox, fjord, fullfit, heterofl  # noqa: F401  (registration)
