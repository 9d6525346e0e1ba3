"""The in-process runtime: simulated clients, executors and the :class:`Simulation` front door."""

from typing import TYPE_CHECKING

from fedfort._lazy import lazy_exports

if TYPE_CHECKING:
    from fedfort.simulation.executors import PoolExecutor, SequentialExecutor, SimulatedClients
    from fedfort.simulation.results import plot_history, write_results
    from fedfort.simulation.simulation import (
        CHECKPOINT_FILE,
        RunResult,
        Simulation,
        SimulationResult,
    )

__all__ = [
    "CHECKPOINT_FILE",
    "PoolExecutor",
    "RunResult",
    "SequentialExecutor",
    "SimulatedClients",
    "Simulation",
    "SimulationResult",
    "plot_history",
    "write_results",
]

if not TYPE_CHECKING:  # type checkers see the imports above; typos stay errors
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "PoolExecutor": "fedfort.simulation.executors",
            "SequentialExecutor": "fedfort.simulation.executors",
            "SimulatedClients": "fedfort.simulation.executors",
            "plot_history": "fedfort.simulation.results",
            "write_results": "fedfort.simulation.results",
            "CHECKPOINT_FILE": "fedfort.simulation.simulation",
            "Simulation": "fedfort.simulation.simulation",
            "RunResult": "fedfort.simulation.simulation",
            "SimulationResult": "fedfort.simulation.simulation",
        },
        globals(),
    )
