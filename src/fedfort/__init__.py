"""fedfort: secure federated learning for PyTorch.

The public API is re-exported here; see ``docs/architecture.md`` for the layers.
"""

__version__ = "0.1.0"

from fedfort.aggregation import AggregationResult, Aggregator, UpdateBatch, WeightedMean
from fedfort.client import ClientData, FederatedClient, LocalTrainer
from fedfort.config import RunConfig, load_config
from fedfort.data import Dataset, Partition, load_dataset, partition_dataset
from fedfort.errors import (
    AggregationError,
    CheckpointError,
    ConfigError,
    DatasetError,
    FedfortError,
    InvalidUpdate,
    PeerError,
    RoundFailed,
)
from fedfort.messages import ClientUpdate, LocalTrainingConfig, TrainTask
from fedfort.models import MLP, LogisticRegression, ModelSpec, SmallCNN, register_model
from fedfort.params import ParamSpec
from fedfort.server import RoundEngine, RoundRecord, Stage
from fedfort.simulation import Simulation, SimulationResult

__all__ = [
    "MLP",
    "AggregationError",
    "AggregationResult",
    "Aggregator",
    "CheckpointError",
    "ClientData",
    "ClientUpdate",
    "ConfigError",
    "Dataset",
    "DatasetError",
    "FederatedClient",
    "FedfortError",
    "InvalidUpdate",
    "LocalTrainer",
    "LocalTrainingConfig",
    "LogisticRegression",
    "ModelSpec",
    "ParamSpec",
    "Partition",
    "PeerError",
    "RoundEngine",
    "RoundFailed",
    "RoundRecord",
    "RunConfig",
    "Simulation",
    "SimulationResult",
    "SmallCNN",
    "Stage",
    "TrainTask",
    "UpdateBatch",
    "WeightedMean",
    "__version__",
    "load_config",
    "load_dataset",
    "partition_dataset",
    "register_model",
]
