"""Datasets that ship with fedfort's dependencies, and partitioners that split them."""

from fedfort.data.datasets import Dataset, available_datasets, load_dataset
from fedfort.data.partition import Partition, partition_dataset

__all__ = ["Dataset", "Partition", "available_datasets", "load_dataset", "partition_dataset"]
