"""Data sets, client partitions and in-memory mini-batches."""

from harness.data.batches import Batches, epoch_sizes, random_crop_flip
from harness.data.datasets import DATASETS, DataBundle, DataError, load_data, random_bundle, register_dataset
from harness.data.partition import PARTITIONS, PartitionError, partition, partition_report

__all__ = [
    "DATASETS", "PARTITIONS", "Batches", "DataBundle", "DataError", "PartitionError", "epoch_sizes", "load_data",
    "partition", "partition_report", "random_bundle", "random_crop_flip", "register_dataset",
]
