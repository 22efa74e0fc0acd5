"""The common engine of the benchmark: config, data, models, fleet, memory, methods, records."""

__version__ = "0.1.0"
