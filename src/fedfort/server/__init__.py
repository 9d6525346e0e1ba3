"""The server role: the round engine, its stages, server optimizers and checkpoints."""

from fedfort.server.checkpoint import Checkpoint, CheckpointStore
from fedfort.server.engine import (
    ClientExecutor,
    CollectOutcome,
    CommitHook,
    Rejection,
    RoundContext,
    RoundEngine,
    RoundRecord,
    Stage,
)
from fedfort.server.optimizers import (
    ServerAdam,
    ServerMomentum,
    ServerOptimizer,
    ServerSGD,
    make_server_optimizer,
)
from fedfort.server.sample_cap import CapSampleCounts
from fedfort.server.scaffold import ScaffoldControl
from fedfort.server.selection import SelectClients, SelectionPolicy, UniformSelection
from fedfort.server.stages import (
    Aggregate,
    ApplyServerOptimizer,
    Broadcast,
    Collect,
    EnforceQuorum,
    Evaluate,
)
from fedfort.server.verify import VerifyUpdates, verify_update

__all__ = [
    "Aggregate",
    "ApplyServerOptimizer",
    "Broadcast",
    "CapSampleCounts",
    "Checkpoint",
    "CheckpointStore",
    "ClientExecutor",
    "Collect",
    "CollectOutcome",
    "CommitHook",
    "EnforceQuorum",
    "Evaluate",
    "Rejection",
    "RoundContext",
    "RoundEngine",
    "RoundRecord",
    "ScaffoldControl",
    "SelectClients",
    "SelectionPolicy",
    "ServerAdam",
    "ServerMomentum",
    "ServerOptimizer",
    "ServerSGD",
    "Stage",
    "UniformSelection",
    "VerifyUpdates",
    "make_server_optimizer",
    "verify_update",
]
