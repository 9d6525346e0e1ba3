"""The Ray runtime: thousands of simulated clients on one machine or a cluster.

:class:`RayExecutor` is a :class:`~fedfort.server.engine.ClientExecutor` like the in-process
ones; it only moves messages. The server (the one :class:`~fedfort.server.RoundEngine`), the
clients' own steps (:meth:`~fedfort.client.FederatedClient.finalize`, sealing and the secure
aggregation protocol) and the attack coalition's ``prepare``/``craft`` hooks run in the
driver exactly as with :class:`~fedfort.simulation.PoolExecutor`; local training
(:meth:`~fedfort.client.LocalTrainer.fit`) runs in a pool of Ray actors
(:class:`~fedfort.simulation.ray_worker.ClientWorker`), each reserving ``cpus_per_client``
CPUs (and optionally a GPU fraction).

- **Lazy clients.** A client is its partition index (:class:`LazyClients`): the run's training
  split and partition go into Ray's object store once per run, each round's global model once
  per round, and a worker materialises a client's rows only for the task it trains.
- **Same results.** Tasks carry their own seeds and results are collected in task order, so
  a Ray run commits the same global model as an in-process run of the same config
  (bit-identical; see ``tests/test_ray_runtime.py``).
- **Failures are dropouts.** A worker process that dies mid-round (killed, crashed, out of
  memory, its node lost) loses only the client it was training: that client is counted as
  dropped for the round, tasks queued behind it go to the replacement actor, and the run
  continues. An exception raised by training itself is a bug, not a dropout, and propagates.
- **Deadlines.** With a collect deadline, updates still running when it passes are dropped
  and their workers replaced, so no stale work runs into the next round.

``address`` is ``None`` to start a private local Ray instance (``local_cpus`` logical CPUs,
no dashboard, quiet logs, no usage reporting), or ``"auto"``/``"HOST:PORT"`` to join a
running cluster (``ray start --head`` ...). A process already connected to Ray keeps its
connection. Nothing is downloaded at run time: no runtime environments are used, so fedfort
and its dependencies must be installed on every node.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from fedfort.attacks.base import Attack
from fedfort.client.client import refusal_reason
from fedfort.edge.config import EdgeConfig
from fedfort.errors import ConfigError, PolicyRefused, PrivacyBudgetExhausted, ProtocolError
from fedfort.messages import (
    ClientUpdate,
    EvaluateTask,
    EvaluationReport,
    FeatureTransform,
    StatisticsRequest,
    TrainTask,
)
from fedfort.params import ParamSpec
from fedfort.run.federation import FederationData
from fedfort.server.engine import CollectOutcome, EvaluationOutcome
from fedfort.simulation.executors import _SimulatedExecutor
from fedfort.simulation.lazy_clients import LazyClients
from fedfort.simulation.ray_connection import RayConnection, RayOptions, import_ray
from fedfort.simulation.ray_worker import ClientWorker, RunData, worker_options

if TYPE_CHECKING:
    from ray import ObjectRef
    from ray.actor import ActorHandle

__all__ = ["LazyClients", "RayConnection", "RayExecutor", "RayOptions"]

_READY_TIMEOUT_S = 120.0
#: calls queued per actor: one running and a few waiting, so an actor never idles while the
#: driver handles a result; only the running one is lost if the worker dies
_DEPTH = 4
_NO_WEIGHTS = np.empty(0, dtype=np.float32)


@dataclass
class _Job:
    task: TrainTask  # as the server sent it (finalize and seal use this one)
    call: TrainTask  # as the client trains it, without the vectors sent by reference
    weights: ObjectRef[np.ndarray]
    server_control: ObjectRef[np.ndarray] | None
    index: int
    control: np.ndarray | None


def _run_data(
    data: FederationData,
    clients: LazyClients,
    attack: Attack | None,
    seed: int,
    edge: EdgeConfig,
) -> RunData:
    rows = [data.client_rows(k) for k in range(len(data.partition.indices))]
    train = [r[0] for r in rows]
    held = [r[1] for r in rows if r[1] is not None]

    def offsets(parts: Sequence[np.ndarray]) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

    return RunData(
        x=data.dataset.x_train,
        y=data.dataset.y_train,
        order=np.concatenate(train).astype(np.int64, copy=False),
        offsets=offsets(train),
        holdout_order=np.concatenate(held).astype(np.int64) if held else None,
        holdout_offsets=offsets(held) if held else None,
        num_classes=data.dataset.num_classes,
        malicious=clients.malicious,
        attack=attack,
        seed=seed,
        edge=edge,
        feature_names=data.schema.features,
        columns=data.client_columns,
        tests=data.client_tests,
    )


class RayExecutor(_SimulatedExecutor):
    """Train the selected clients on a pool of Ray actors (see the module docstring).

    ``tasks_per_node`` counts the updates each Ray node trained, ``last_placement`` maps the
    last round's clients to their node, and ``replaced_workers`` counts workers that died or
    were cut off at a deadline and were replaced.
    """

    def __init__(
        self,
        clients: LazyClients,
        build_model: Callable[[], nn.Module],
        data: FederationData,
        *,
        attack: Attack | None = None,
        seed: int = 0,
        dropout_rate: float = 0.0,
        secure_dropout_rate: float = 0.0,
        options: RayOptions | None = None,
        edge: EdgeConfig | None = None,
    ) -> None:
        super().__init__(clients, seed, dropout_rate, secure_dropout_rate)
        if len(data.partition.indices) != len(clients.ids):
            raise ConfigError(
                f"{len(clients.ids)} clients but the partition has {len(data.partition.indices)}"
            )
        self.lazy = clients
        self.options = options or RayOptions()
        self.tasks_per_node: collections.Counter[str] = collections.Counter()
        self.last_placement: dict[str, str] = {}
        self.replaced_workers = 0
        self._actors: list[ActorHandle[Any]] = []
        #: the model's dimension, which a client checks an evaluation task's weights against
        self._dim = ParamSpec.from_module(build_model()).dim
        self._transform: FeatureTransform | None = None
        ray = import_ray()
        self.connection = RayConnection.open(
            self.options.address, local_cpus=self.options.local_cpus
        )
        try:
            size = self._pool_size(ray.cluster_resources())
            self._data = ray.put(
                _run_data(data, clients, attack, seed, edge if edge is not None else EdgeConfig())
            )
            self._worker = ray.remote(ClientWorker).options(
                **worker_options(self.options.cpus_per_client, self.options.gpus_per_client)
            )
            self._build_model = build_model
            self._actors = [self._spawn() for _ in range(size)]
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _pool_size(self, resources: dict[str, float]) -> int:
        o = self.options
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if o.cpus_per_client > cpus:
            raise ConfigError(
                f"simulation.ray_cpus_per_client = {o.cpus_per_client} but the Ray cluster "
                f"has {cpus:g} CPUs"
            )
        if o.gpus_per_client > gpus:
            raise ConfigError(
                f"simulation.ray_gpus_per_client = {o.gpus_per_client} but the Ray cluster "
                f"has {gpus:g} GPUs"
            )
        fit = int(cpus / o.cpus_per_client + 1e-9)
        if o.gpus_per_client > 0:
            fit = min(fit, int(gpus / o.gpus_per_client + 1e-9))
        if o.actors is None:
            return max(1, fit)
        if o.actors > fit:
            raise ConfigError(
                f"simulation.ray_actors = {o.actors} actors x {o.cpus_per_client} CPUs "
                f"(and {o.gpus_per_client} GPUs) do not fit the Ray cluster ({cpus:g} CPUs, "
                f"{gpus:g} GPUs): at most {fit} fit; lower ray_actors or the per-client share"
            )
        return o.actors

    def _spawn(self) -> ActorHandle[Any]:
        actor: ActorHandle[Any] = self._worker.remote(
            self._build_model, self._data, self.options.torch_threads
        )
        return actor

    def _wait_ready(self) -> None:
        ray = import_ray()
        try:
            ray.get([a.where.remote() for a in self._actors], timeout=_READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError:
            raise ConfigError(
                f"Ray could not start {len(self._actors)} client workers within "
                f"{_READY_TIMEOUT_S:g} s: the cluster lacks the requested resources"
            ) from None
        except ray.exceptions.RayError as exc:
            raise ConfigError(
                f"a Ray client worker failed to start ({exc}); the model factory and fedfort "
                "must be importable on every node"
            ) from None

    @property
    def size(self) -> int:
        """Number of actors in the pool."""
        return len(self._actors)

    def workers(self) -> list[tuple[str, int]]:
        """The (node id, process id) of every actor, in pool order."""
        return list(import_ray().get([a.where.remote() for a in self._actors]))

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        start = time.perf_counter()
        if tasks and tasks[0].transform is not None:
            # the hold-outs are scored through the same transform the clients train with
            self._transform = tasks[0].transform
        self.lazy.release()
        ray = import_ray()
        refs: dict[int, ObjectRef[np.ndarray]] = {}

        def by_reference(vector: np.ndarray) -> ObjectRef[np.ndarray]:
            # the round's global model (and SCAFFOLD's c) enter the object store once
            if id(vector) not in refs:
                refs[id(vector)] = ray.put(vector)
            return refs[id(vector)]

        jobs: list[_Job] = []
        missing: list[str] = []
        refused: dict[str, str] = {}
        for task in tasks:
            if self.drops_out(task):
                missing.append(task.client_id)
                continue
            try:
                # the client's own checks and training seed, before any work is dispatched
                trained = self.clients.get(task.client_id).training_task(self.clients.prepare(task))
            except (PolicyRefused, PrivacyBudgetExhausted) as exc:
                missing.append(task.client_id)
                refused[task.client_id] = refusal_reason(exc)
                continue
            sc = trained.server_control
            jobs.append(
                _Job(
                    task=task,
                    call=dataclasses.replace(trained, weights=_NO_WEIGHTS, server_control=None),
                    weights=by_reference(trained.weights),
                    server_control=None if sc is None else by_reference(sc),
                    index=self.lazy.index(task.client_id),
                    control=self.lazy.control(task.client_id),
                )
            )
        outcomes = self._dispatch(jobs, deadline_s, start)
        received: list[ClientUpdate] = []
        self.last_placement = {}
        for job, outcome in zip(jobs, outcomes, strict=True):
            cid = job.task.client_id
            if outcome is None:
                missing.append(cid)
                continue
            update, node = outcome
            self.tasks_per_node[node] += 1
            self.last_placement[cid] = node
            # noise and reports are added here, as the client's last step before sending
            received.append(self.clients.get(cid).finalize(job.task, update))
        return CollectOutcome(
            self.clients.seal(tasks, self.clients.finish(tasks, received)), missing, refused
        )

    def evaluate(
        self, tasks: Sequence[EvaluateTask], deadline_s: float | None
    ) -> EvaluationOutcome:
        """The driver-side clients check each task (one answer per round, increasing rounds,
        the model's shape); the actors score the admitted ones on the clients' hold-outs."""
        start = time.perf_counter()
        ray = import_ray()
        weights: dict[int, ObjectRef[np.ndarray]] = {}
        calls: list[tuple[EvaluateTask, ObjectRef[EvaluationReport]]] = []
        missing: list[str] = []
        for i, task in enumerate(tasks):
            try:
                self.clients.get(task.client_id).evaluation.admit(task, self._dim)
            except ProtocolError:
                missing.append(task.client_id)
                continue
            if id(task.weights) not in weights:
                weights[id(task.weights)] = ray.put(task.weights)
            call = dataclasses.replace(task, weights=_NO_WEIGHTS)
            actor = self._actors[i % len(self._actors)]
            ref: ObjectRef[EvaluationReport] = actor.evaluate.remote(
                call, weights[id(task.weights)], self.lazy.index(task.client_id), self._transform
            )
            calls.append((task, ref))
        timeout = (
            None if deadline_s is None else max(0.0, deadline_s - (time.perf_counter() - start))
        )
        done, _ = ray.wait([r for _, r in calls], num_returns=len(calls), timeout=timeout)
        finished = set(done)
        reports: list[EvaluationReport] = []
        for task, pending in calls:
            try:
                if pending not in finished:
                    raise _WorkerLost()
                reports.append(_result(ray, pending))
            except (_WorkerLost, ProtocolError, ConfigError):
                missing.append(task.client_id)
        return EvaluationOutcome(reports, missing)

    def _local_statistics(self, requests: Mapping[str, StatisticsRequest]) -> dict[str, np.ndarray]:
        """The clients' statistics computed by the workers that hold their rows."""
        ray = import_ray()
        refs: dict[str, ObjectRef[np.ndarray]] = {
            cid: self._actors[k % len(self._actors)].statistics.remote(
                request, cid, self.lazy.index(cid)
            )
            for k, (cid, request) in enumerate(requests.items())
        }
        return {cid: np.asarray(ray.get(ref), dtype=np.float64) for cid, ref in refs.items()}

    def _call(self, slot: int, job: _Job) -> ObjectRef[tuple[ClientUpdate, str]]:
        actor = self._actors[slot]
        ref: ObjectRef[tuple[ClientUpdate, str]] = actor.fit.remote(
            job.call, job.weights, job.server_control, job.index, job.control
        )
        return ref

    def _dispatch(
        self, jobs: Sequence[_Job], deadline_s: float | None, start: float
    ) -> list[tuple[ClientUpdate, str] | None]:
        """Run ``jobs`` on the pool, at most ``_DEPTH`` per actor; results in job order."""
        ray = import_ray()
        results: list[tuple[ClientUpdate, str] | None] = [None] * len(jobs)
        queue = collections.deque(range(len(jobs)))
        inflight: dict[ObjectRef[Any], tuple[int, int]] = {}
        lanes: list[collections.deque[ObjectRef[Any]]] = [collections.deque() for _ in self._actors]

        def fill(slot: int) -> None:
            while queue and len(lanes[slot]) < _DEPTH:
                j = queue.popleft()
                ref = self._call(slot, jobs[j])
                inflight[ref] = (j, slot)
                lanes[slot].append(ref)

        def lost(slot: int) -> None:
            # A sync actor runs its calls in order: the first that failed was running when
            # the worker died (its client drops out); the ones behind it never started.
            crashed, requeue = False, []
            for ref in lanes[slot]:
                j, _ = inflight.pop(ref)
                if crashed:
                    requeue.append(j)
                    continue
                try:
                    results[j] = _result(ray, ref)
                except _WorkerLost:
                    crashed = True
            lanes[slot].clear()
            queue.extendleft(reversed(requeue))
            self._replace(slot)

        for slot in range(len(self._actors)):
            fill(slot)
        while inflight:
            timeout = None
            if deadline_s is not None:
                timeout = deadline_s - (time.perf_counter() - start)
                if timeout <= 0:
                    break
            done, _ = ray.wait(list(inflight), num_returns=1, timeout=timeout)
            if not done:
                break
            ref = done[0]
            j, slot = inflight[ref]
            try:
                results[j] = _result(ray, ref)
            except _WorkerLost:
                lost(slot)
            else:
                del inflight[ref]
                lanes[slot].remove(ref)
            fill(slot)
        for slot, lane in enumerate(lanes):
            if lane:  # still training when the deadline passed: cut the late work off
                self._replace(slot)
        return results

    def _replace(self, slot: int) -> None:
        with contextlib.suppress(Exception):  # it may be gone already
            import_ray().kill(self._actors[slot], no_restart=True)
        self._actors[slot] = self._spawn()
        self.replaced_workers += 1

    def close(self) -> None:
        if self._actors:
            ray = import_ray()
            for actor in self._actors:
                with contextlib.suppress(Exception):  # the cluster may be gone already
                    ray.kill(actor, no_restart=True)
            self._actors = []
        self._data = None
        self.connection.close()


class _WorkerLost(Exception):
    """The worker process running a call died (killed, crashed, OOM, node lost)."""


def _result(ray: Any, ref: ObjectRef[Any]) -> Any:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, Exception):
            raise cause from None
        raise
    except ray.exceptions.RayError:
        raise _WorkerLost() from None
