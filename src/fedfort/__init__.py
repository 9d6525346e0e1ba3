"""fedfort: secure federated learning for PyTorch.

The public API is re-exported here; see ``docs/architecture.md`` for the layers. Names resolve
lazily (PEP 562): ``import fedfort`` loads neither torch nor any other heavy dependency until a
name that needs it is used, and importing fedfort changes no process-wide setting.
"""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports
from fedfort._version import __version__

if TYPE_CHECKING:
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
    from fedfort.evaluation import loss, metric
    from fedfort.messages import ClientUpdate, LocalTrainingConfig, TrainTask
    from fedfort.models import MLP, LogisticRegression, ModelSpec, SmallCNN, register_model
    from fedfort.params import ParamSpec
    from fedfort.run.model_io import load_model
    from fedfort.run.result import RunResult
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
    "RunResult",
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
    "load_model",
    "loss",
    "metric",
    "partition_dataset",
    "register_model",
]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "AggregationResult": "fedfort.aggregation",
            "Aggregator": "fedfort.aggregation",
            "UpdateBatch": "fedfort.aggregation",
            "WeightedMean": "fedfort.aggregation",
            "ClientData": "fedfort.client",
            "FederatedClient": "fedfort.client",
            "LocalTrainer": "fedfort.client",
            "RunConfig": "fedfort.config",
            "load_config": "fedfort.config",
            "Dataset": "fedfort.data",
            "Partition": "fedfort.data",
            "load_dataset": "fedfort.data",
            "partition_dataset": "fedfort.data",
            "AggregationError": "fedfort.errors",
            "CheckpointError": "fedfort.errors",
            "ConfigError": "fedfort.errors",
            "DatasetError": "fedfort.errors",
            "FedfortError": "fedfort.errors",
            "InvalidUpdate": "fedfort.errors",
            "PeerError": "fedfort.errors",
            "RoundFailed": "fedfort.errors",
            "loss": "fedfort.evaluation",
            "metric": "fedfort.evaluation",
            "ClientUpdate": "fedfort.messages",
            "LocalTrainingConfig": "fedfort.messages",
            "TrainTask": "fedfort.messages",
            "MLP": "fedfort.models",
            "LogisticRegression": "fedfort.models",
            "ModelSpec": "fedfort.models",
            "SmallCNN": "fedfort.models",
            "register_model": "fedfort.models",
            "ParamSpec": "fedfort.params",
            "RoundEngine": "fedfort.server",
            "RoundRecord": "fedfort.server",
            "Stage": "fedfort.server",
            "RunResult": "fedfort.run.result",
            "load_model": "fedfort.run.model_io",
            "Simulation": "fedfort.simulation",
            "SimulationResult": "fedfort.simulation",
        },
        globals(),
    )
