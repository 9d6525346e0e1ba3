"""The Ray actor that trains clients: one model, the run's data, any client on demand.

A :class:`ClientWorker` is created once per actor slot with references to the run's training
split and its partition, which Ray resolves from its object store (shared memory on a node,
so every actor on a node maps the same pages, and each node fetches them once per run). For a
task it materialises the client's rows from the partition, runs them through the client's
``[edge]`` data protection when configured (validate, mask, sanitise; the same
:func:`~fedfort.edge.client_training_data` every runtime calls, kept for the client's later
tasks in a bounded cache), poisons them if the client is a malicious one (exactly as
:class:`~fedfort.attacks.AdversarialClient` does), loads the
round's global model (one object-store reference per round) and runs
:meth:`fedfort.client.LocalTrainer.fit`, the same code every runtime runs. An evaluation task
is scored on the client's hold-out rows with
:func:`fedfort.client.evaluation.evaluate_holdout`, as every runtime does.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from fedfort.attacks.adversary import poisoned_data
from fedfort.attacks.base import Attack
from fedfort.client.evaluation import evaluate_holdout
from fedfort.client.statistics import checked_transform, local_statistics
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.edge.config import EdgeConfig
from fedfort.edge.records import client_training_data, with_synthetic_identifiers
from fedfort.edge.schema import Records
from fedfort.errors import ConfigError
from fedfort.messages import (
    ClientUpdate,
    EvaluateTask,
    EvaluationReport,
    FeatureTransform,
    StatisticsRequest,
    TrainTask,
)

__all__ = ["ClientWorker", "RunData", "worker_options"]


@dataclasses.dataclass(frozen=True)
class RunData:
    """What every worker needs of a run, put into the object store once.

    Client ``k`` trains on rows ``order[offsets[k]:offsets[k + 1]]`` of ``(x, y)``.
    """

    x: np.ndarray
    y: np.ndarray
    order: np.ndarray
    offsets: np.ndarray
    num_classes: int
    malicious: frozenset[str]
    attack: Attack | None
    seed: int
    edge: EdgeConfig = dataclasses.field(default_factory=EdgeConfig)
    #: feature names, each client's record columns from its files, the federated transform
    feature_names: tuple[str, ...] | None = None
    columns: tuple[dict[str, np.ndarray], ...] = ()
    #: client ``k``'s evaluation hold-out is ``holdout_order[holdout_offsets[k]:...[k + 1]]``
    holdout_order: np.ndarray | None = None
    holdout_offsets: np.ndarray | None = None
    #: each client's own hold-out (its test file), when the clients brought their files
    tests: tuple[tuple[np.ndarray, np.ndarray] | None, ...] = ()


#: clients whose protected data a worker keeps (the [edge] pipeline runs once per client, not
#: once per task, as long as a worker sees fewer clients than this between two of its tasks)
_PROTECTED_CACHE = 256


class ClientWorker:
    """Trains any client of the run on request (run as a Ray actor)."""

    def __init__(self, build_model: Callable[[], nn.Module], data: RunData, threads: int) -> None:
        import ray

        torch.set_num_threads(threads)
        self.trainer = LocalTrainer(build_model())
        self.data = data
        self.node_id: str = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()
        self._protected: dict[str, tuple[ClientData, dict[str, float]]] = {}
        #: client id -> (transform digest, its rows through that transform)
        self._transformed: dict[str, tuple[str, ClientData]] = {}

    def where(self) -> tuple[str, int]:
        """The Ray node id and process id this worker runs in."""
        return self.node_id, self.pid

    def client_data(self, client_id: str, index: int) -> tuple[ClientData, dict[str, float]]:
        """Client ``index``'s training rows (a copy: the object store's pages are read-only)
        and the ``edge_*`` counts its data protection reports (none for a malicious client,
        which, like :class:`~fedfort.attacks.AdversarialClient`, reports nothing of its data)."""
        cached = self._protected.get(client_id)
        if cached is not None:
            return cached
        d = self.data
        rows = d.order[d.offsets[index] : d.offsets[index + 1]]
        x, y = d.x[rows], d.y[rows]
        metrics: dict[str, float] = {}
        if d.edge.enabled:
            if d.columns:
                records = Records(x, y, d.columns[index], d.feature_names)
            elif d.edge.synthetic_identifiers:
                records = with_synthetic_identifiers(x, y, d.seed, index)
            else:
                records = Records(x, y, feature_names=d.feature_names)
            protected, metrics = client_training_data(
                d.edge, records, client_id=client_id, num_classes=d.num_classes, seed=d.seed
            )
            x, y = protected.x.numpy(), protected.y.numpy()
        if d.attack is not None and client_id in d.malicious:
            x, y = poisoned_data(d.attack, client_id, x, y, d.num_classes, d.seed)
            metrics = {}
        result = ClientData.from_numpy(x, y), metrics
        if d.edge.enabled:
            if len(self._protected) >= _PROTECTED_CACHE:
                self._protected.pop(next(iter(self._protected)))
            self._protected[client_id] = result
        return result

    def _through(self, client_id: str, data: ClientData, transform: FeatureTransform) -> ClientData:
        """``data`` through the federation's transform (checked by the driver-side client)."""
        key = transform.digest()
        cached = self._transformed.get(client_id)
        if cached is None or cached[0] != key:
            apply = checked_transform(transform, data.x.shape[1]).apply
            cached = key, ClientData.from_numpy(apply(data.x.numpy()), data.y.numpy())
            if len(self._transformed) >= _PROTECTED_CACHE:
                self._transformed.pop(next(iter(self._transformed)))
            self._transformed[client_id] = cached
        return cached[1]

    def statistics(self, request: StatisticsRequest, client_id: str, index: int) -> np.ndarray:
        """Client ``index``'s feature statistics for ``request``, over the rows it trains on
        (the driver-side client adds its noise and seals them)."""
        data, _ = self.client_data(client_id, index)
        return local_statistics(data.x.numpy(), request)

    def fit(
        self,
        task: TrainTask,
        weights: np.ndarray,
        server_control: np.ndarray | None,
        index: int,
        control: np.ndarray | None,
    ) -> tuple[ClientUpdate, str]:
        """Train client ``index`` for ``task`` from ``weights``; the update and this node."""
        full = dataclasses.replace(
            task,
            weights=np.array(weights, dtype=np.float32),
            server_control=None if server_control is None else np.array(server_control),
        )
        data, metrics = self.client_data(task.client_id, index)
        if task.transform is not None:
            data = self._through(task.client_id, data, task.transform)
        own = None if control is None else np.array(control)
        update = self.trainer.fit(full, data, own)
        if metrics:  # as FederatedClient.finalize adds them (its privacy step may drop them)
            update = dataclasses.replace(update, metrics={**update.metrics, **metrics})
        return update, self.node_id

    def evaluate(
        self,
        task: EvaluateTask,
        weights: np.ndarray,
        index: int,
        transform: FeatureTransform | None = None,
    ) -> EvaluationReport:
        """Score ``weights`` on client ``index``'s hold-out (the driver checked the task),
        through the federation's feature transform when the run has one."""
        d = self.data
        if d.tests and d.tests[index] is not None:
            x, y = d.tests[index]  # type: ignore[misc]
        elif d.holdout_order is not None and d.holdout_offsets is not None:
            rows = d.holdout_order[d.holdout_offsets[index] : d.holdout_offsets[index + 1]]
            x, y = d.x[rows], d.y[rows]
        else:
            raise ConfigError(f"{task.client_id} keeps no hold-out to evaluate on")
        if transform is not None:
            x = checked_transform(transform, x.shape[1]).apply(x)
        full = dataclasses.replace(task, weights=np.array(weights, dtype=np.float32))
        return evaluate_holdout(self.trainer, full, ClientData.from_numpy(x, y))


def worker_options(cpus: float, gpus: float) -> dict[str, Any]:
    """Ray actor options: the resources of one client, and no automatic restart or retry.

    A worker that dies is replaced by the executor itself, which counts the client it was
    training as dropped for the round; Ray must not silently re-run that training.
    """
    options: dict[str, Any] = {"num_cpus": cpus, "max_restarts": 0, "max_task_retries": 0}
    if gpus > 0:
        options["num_gpus"] = gpus
    return options
