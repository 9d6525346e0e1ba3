"""The server role: the round engine, its stages, server optimizers and checkpoints."""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
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

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "Checkpoint": "fedfort.server.checkpoint",
            "CheckpointStore": "fedfort.server.checkpoint",
            "ClientExecutor": "fedfort.server.engine",
            "CollectOutcome": "fedfort.server.engine",
            "CommitHook": "fedfort.server.engine",
            "Rejection": "fedfort.server.engine",
            "RoundContext": "fedfort.server.engine",
            "RoundEngine": "fedfort.server.engine",
            "RoundRecord": "fedfort.server.engine",
            "Stage": "fedfort.server.engine",
            "ServerAdam": "fedfort.server.optimizers",
            "ServerMomentum": "fedfort.server.optimizers",
            "ServerOptimizer": "fedfort.server.optimizers",
            "ServerSGD": "fedfort.server.optimizers",
            "make_server_optimizer": "fedfort.server.optimizers",
            "CapSampleCounts": "fedfort.server.sample_cap",
            "ScaffoldControl": "fedfort.server.scaffold",
            "SelectClients": "fedfort.server.selection",
            "SelectionPolicy": "fedfort.server.selection",
            "UniformSelection": "fedfort.server.selection",
            "Aggregate": "fedfort.server.stages",
            "ApplyServerOptimizer": "fedfort.server.stages",
            "Broadcast": "fedfort.server.stages",
            "Collect": "fedfort.server.stages",
            "EnforceQuorum": "fedfort.server.stages",
            "Evaluate": "fedfort.server.stages",
            "VerifyUpdates": "fedfort.server.verify",
            "verify_update": "fedfort.server.verify",
        },
        globals(),
    )
