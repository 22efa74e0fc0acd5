"""NeuLite: progressive block-wise training for memory-constrained FL; importing registers ``neulite``."""

from neulite import method  # noqa: F401  (registration)
