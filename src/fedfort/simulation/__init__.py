"""The in-process runtime: simulated clients, executors and the :class:`Simulation` front door."""

from fedfort.simulation.executors import PoolExecutor, SequentialExecutor, SimulatedClients
from fedfort.simulation.results import plot_history, write_results
from fedfort.simulation.simulation import CHECKPOINT_FILE, Simulation, SimulationResult

__all__ = [
    "CHECKPOINT_FILE",
    "PoolExecutor",
    "SequentialExecutor",
    "SimulatedClients",
    "Simulation",
    "SimulationResult",
    "plot_history",
    "write_results",
]
