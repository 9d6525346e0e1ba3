"""In-process runtimes: run the round engine's tasks on simulated clients.

Both executors only move messages: they hand each :class:`~fedfort.messages.TrainTask` to the
client it names and return the :class:`~fedfort.messages.ClientUpdate`. Learning happens in
:class:`~fedfort.client.LocalTrainer`, exactly as it will on a networked client.

- :class:`SequentialExecutor` trains clients one after another in this process.
- :class:`PoolExecutor` trains them on a pool of worker processes (``spawn``ed, each holding
  the client datasets once, set up by the pool initializer). Results are returned in task
  order, and each task carries its own seed, so a pool run equals a sequential run.

Simulated dropouts are drawn from a generator keyed by (seed, round, attempt, client), so they
are reproducible; ``secure_dropout_rate`` also makes clients vanish at each step of a secure
aggregation session (keyed by the step as well), and a client that vanished stays silent for
the rest of that session. A deadline drops updates that arrive late (wall clock), which by nature is
not reproducible; leave it unset for reproducible runs.
"""

from __future__ import annotations

import multiprocessing
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from typing import Any

import numpy as np
import torch
from torch import nn

from fedfort.attacks.adversary import Coalition
from fedfort.client.client import FederatedClient, refusal_reason
from fedfort.client.evaluation import evaluate_holdout
from fedfort.client.statistics import checked_transform
from fedfort.client.training import ClientData, LocalTrainer
from fedfort.errors import (
    ConfigError,
    PolicyRefused,
    PrivacyBudgetExhausted,
    ProtocolError,
    SecAggAbort,
)
from fedfort.messages import (
    ClientUpdate,
    EvaluateTask,
    EvaluationReport,
    StatisticsRequest,
    TrainTask,
)
from fedfort.params import ParamSpec
from fedfort.server.engine import CollectOutcome, EvaluationOutcome

__all__ = ["PoolExecutor", "SequentialExecutor", "SimulatedClients"]

_DROPOUT_STREAM = 0x64726F70  # distinguishes dropout draws from training seeds
_SECURE_DROPOUT_STREAM = 0x73656364
_COALITION_KEY = "__coalition__"  # not a client id: ids never start with "__"


class SimulatedClients:
    """The federation's clients in this process: their data and their persistent state.

    ``coalition`` holds the malicious clients' attack (see :mod:`fedfort.attacks`): it may
    change the task a member trains on (:meth:`prepare`) and crafts the members' final
    updates once the round's updates are in (:meth:`finish`), as colluding attackers do.
    """

    def __init__(
        self, clients: Sequence[FederatedClient], coalition: Coalition | None = None
    ) -> None:
        self.clients = {c.client_id: c for c in clients}
        if len(self.clients) != len(clients):
            raise ConfigError("client ids must be unique")
        self.coalition = coalition

    @property
    def ids(self) -> list[str]:
        return list(self.clients)

    def get(self, client_id: str) -> FederatedClient:
        client = self.clients.get(client_id)
        if client is None:
            raise ConfigError(f"task for unknown client {client_id!r}")
        return client

    def prepare(self, task: TrainTask) -> TrainTask:
        """The task the client actually trains on (a malicious one may train differently)."""
        return task if self.coalition is None else self.coalition.prepare(task)

    def finish(
        self, tasks: Sequence[TrainTask], received: Sequence[ClientUpdate]
    ) -> list[ClientUpdate]:
        """The updates as submitted: the coalition's members replace theirs with crafted ones."""
        if self.coalition is None:
            return list(received)
        return self.coalition.craft(tasks, received)

    def acknowledge(self, accepted: Sequence[ClientUpdate]) -> None:
        for update in accepted:
            self.get(update.client_id).acknowledge(update)

    @property
    def directory(self) -> dict[str, bytes]:
        """Every client's registered Ed25519 identity public key (the federation's PKI)."""
        return {cid: c.identity.public for cid, c in self.clients.items()}

    def seal(
        self, tasks: Sequence[TrainTask], updates: Sequence[ClientUpdate]
    ) -> list[ClientUpdate]:
        """Updates of securely aggregated tasks stay with their clients; sealed replies go."""
        by_client = {t.client_id: t for t in tasks}
        directory = self.directory
        out = []
        for update in updates:
            task = by_client.get(update.client_id)
            if task is None or task.secure is None:
                out.append(update)
            else:
                out.append(self.get(update.client_id).seal(task, update, directory))
        return out

    def arrays(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every client's (possibly poisoned) training data as NumPy arrays."""
        return {
            cid: (c.raw_data.x.numpy(), c.raw_data.y.numpy()) for cid, c in self.clients.items()
        }

    def holdouts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Every client's evaluation hold-out as NumPy arrays (clients that keep one)."""
        return {
            cid: (c.holdout.x.numpy(), c.holdout.y.numpy())
            for cid, c in self.clients.items()
            if c.holdout is not None
        }

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            cid: c.state_dict() for cid, c in self.clients.items() if c.state_dict()
        }
        if self.coalition is not None and self.coalition.state_dict():
            state[_COALITION_KEY] = self.coalition.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for cid, client in self.clients.items():
            client.load_state_dict(state.get(cid, {}))
        if self.coalition is not None:
            self.coalition.load_state_dict(state.get(_COALITION_KEY, {}))


class _SimulatedExecutor:
    def __init__(
        self,
        clients: SimulatedClients,
        seed: int,
        dropout_rate: float,
        secure_dropout_rate: float = 0.0,
    ) -> None:
        rates = (("dropout_rate", dropout_rate), ("secure_dropout_rate", secure_dropout_rate))
        for name, rate in rates:
            if not 0.0 <= rate < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {rate}")
        self.clients = clients
        self.seed = seed
        self.dropout_rate = dropout_rate
        self.secure_dropout_rate = secure_dropout_rate
        self._silent: tuple[tuple[int, int], set[str]] = ((0, 0), set())

    def drops_out(self, task: TrainTask) -> bool:
        """Whether the simulated client vanishes for this task (seeded, reproducible)."""
        if self.dropout_rate == 0.0:
            return False
        key = (task.round, task.attempt, zlib.crc32(task.client_id.encode()), _DROPOUT_STREAM)
        return self._draw(key) < self.dropout_rate

    def _draw(self, key: tuple[int, ...]) -> float:
        """A uniform in [0, 1) keyed by the run seed and ``key`` (independent of call order)."""
        return float(
            np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=key)).random()
        )

    def acknowledge(self, round_: int, accepted: Sequence[ClientUpdate]) -> None:
        self.clients.acknowledge(accepted)

    def _vanishes(self, round_: int, attempt: int, step: int, client_id: str) -> bool:
        if self.secure_dropout_rate == 0.0:
            return False
        key = (round_, attempt, zlib.crc32(client_id.encode()), step, _SECURE_DROPOUT_STREAM)
        return self._draw(key) < self.secure_dropout_rate

    def _local_statistics(self, requests: Mapping[str, StatisticsRequest]) -> dict[str, np.ndarray]:
        """Statistics computed where the clients' rows live (none: each client has its own)."""
        return {}

    def exchange(
        self,
        round_: int,
        attempt: int,
        step: int,
        outbox: Mapping[str, object],
        deadline_s: float | None,
    ) -> dict[str, object]:
        """Deliver one step of a secure aggregation session (or the statistics round's
        request); the replies that came back.

        A client that refuses a message (a protocol error, or an abort because it caught the
        server cheating) sends nothing, exactly like one that vanished.
        """
        if self._silent[0] != (round_, attempt):
            self._silent = ((round_, attempt), set())
        silent = self._silent[1]
        start = time.perf_counter()
        replies: dict[str, object] = {}
        registered = set(self.clients.ids)
        requests = {
            c: m
            for c, m in outbox.items()
            if isinstance(m, StatisticsRequest) and c in registered and c not in silent
        }
        local = self._local_statistics(requests) if requests else {}
        for cid, message in outbox.items():
            if cid in silent or cid not in registered:
                continue
            if self._vanishes(round_, attempt, step, cid):
                silent.add(cid)
                continue
            client = self.clients.get(cid)
            try:
                if isinstance(message, StatisticsRequest):
                    directory = self.clients.directory if message.secure is not None else {}
                    reply: object = client.answer_statistics(message, directory, local.get(cid))
                else:
                    reply = client.secure_handle(round_, attempt, message)
            except (ProtocolError, SecAggAbort, PolicyRefused):
                silent.add(cid)
                continue
            if deadline_s is not None and time.perf_counter() - start > deadline_s:
                silent.add(cid)
                continue
            replies[cid] = reply
        return replies

    def close(self) -> None:
        return None


class SequentialExecutor(_SimulatedExecutor):
    """Train the selected clients one after another in this process."""

    def __init__(
        self,
        clients: SimulatedClients,
        trainer: LocalTrainer,
        *,
        seed: int = 0,
        dropout_rate: float = 0.0,
        secure_dropout_rate: float = 0.0,
    ) -> None:
        super().__init__(clients, seed, dropout_rate, secure_dropout_rate)
        self.trainer = trainer

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        start = time.perf_counter()
        received: list[ClientUpdate] = []
        missing: list[str] = []
        refused: dict[str, str] = {}
        for task in tasks:
            if self.drops_out(task):
                missing.append(task.client_id)
                continue
            try:
                update = self.clients.get(task.client_id).handle(task, self.trainer)
            except (PolicyRefused, PrivacyBudgetExhausted) as exc:
                missing.append(task.client_id)  # the client refused: it sends nothing
                refused[task.client_id] = refusal_reason(exc)
                continue
            if deadline_s is not None and time.perf_counter() - start > deadline_s:
                missing.append(task.client_id)
                continue
            received.append(update)
        return CollectOutcome(
            self.clients.seal(tasks, self.clients.finish(tasks, received)), missing, refused
        )

    def evaluate(
        self, tasks: Sequence[EvaluateTask], deadline_s: float | None
    ) -> EvaluationOutcome:
        """Each client scores the model on its hold-out; a refusal is silence."""
        start = time.perf_counter()
        reports: list[EvaluationReport] = []
        missing: list[str] = []
        for task in tasks:
            try:
                report = self.clients.get(task.client_id).evaluate(task, self.trainer)
            except (ProtocolError, ConfigError):
                missing.append(task.client_id)
                continue
            if deadline_s is not None and time.perf_counter() - start > deadline_s:
                missing.append(task.client_id)
                continue
            reports.append(report)
        return EvaluationOutcome(reports, missing)


_WORKER: dict[str, Any] = {}


def _init_worker(
    build_model: Callable[[], nn.Module],
    data: dict[str, tuple[np.ndarray, np.ndarray]],
    threads: int,
    holdouts: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> None:
    torch.set_num_threads(threads)
    _WORKER["trainer"] = LocalTrainer(build_model())
    _WORKER["data"] = {cid: ClientData.from_numpy(x, y) for cid, (x, y) in data.items()}
    _WORKER["holdouts"] = {
        cid: ClientData.from_numpy(x, y) for cid, (x, y) in (holdouts or {}).items()
    }


def _worker_evaluate(task: EvaluateTask) -> EvaluationReport:
    return evaluate_holdout(_WORKER["trainer"], task, _WORKER["holdouts"][task.client_id])


def _worker_fit(task: TrainTask, control: np.ndarray | None) -> ClientUpdate:
    trainer: LocalTrainer = _WORKER["trainer"]
    data: ClientData = _WORKER["data"][task.client_id]
    if task.transform is not None:  # checked by the client before the task was dispatched
        transformed: dict[str, tuple[str, ClientData]] = _WORKER.setdefault("transformed", {})
        key = task.transform.digest()
        cached = transformed.get(task.client_id)
        if cached is None or cached[0] != key:
            apply = checked_transform(task.transform, data.x.shape[1]).apply
            cached = key, ClientData.from_numpy(apply(data.x.numpy()), data.y.numpy())
            transformed[task.client_id] = cached
        data = cached[1]
    return trainer.fit(task, data, control)


class PoolExecutor(_SimulatedExecutor):
    """Train the selected clients on a pool of ``workers`` processes."""

    def __init__(
        self,
        clients: SimulatedClients,
        build_model: Callable[[], nn.Module],
        *,
        workers: int,
        seed: int = 0,
        dropout_rate: float = 0.0,
        secure_dropout_rate: float = 0.0,
        threads: int = 1,
    ) -> None:
        super().__init__(clients, seed, dropout_rate, secure_dropout_rate)
        if workers < 1:
            raise ConfigError(f"a process pool needs workers >= 1, got {workers}")
        self.pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(build_model, clients.arrays(), threads, clients.holdouts()),
        )
        self.dim = ParamSpec.from_module(build_model()).dim

    def execute(self, tasks: Sequence[TrainTask], deadline_s: float | None) -> CollectOutcome:
        futures: list[tuple[TrainTask, Future[ClientUpdate]]] = []
        missing: list[str] = []
        refused: dict[str, str] = {}
        for task in tasks:
            if self.drops_out(task):
                missing.append(task.client_id)
                continue
            client = self.clients.get(task.client_id)
            try:
                # the client's own checks and training seed, before any work is dispatched
                trained = client.training_task(self.clients.prepare(task))
            except (PolicyRefused, PrivacyBudgetExhausted) as exc:
                missing.append(task.client_id)
                refused[task.client_id] = refusal_reason(exc)
                continue
            control = client.control
            futures.append((task, self.pool.submit(_worker_fit, trained, control)))
        done, _ = wait([f for _, f in futures], timeout=deadline_s)
        received: list[ClientUpdate] = []
        for task, future in futures:
            if future in done:
                # noise and reports are added here, as the client's last step before sending
                received.append(self.clients.get(task.client_id).finalize(task, future.result()))
            else:
                future.cancel()
                missing.append(task.client_id)
        return CollectOutcome(
            self.clients.seal(tasks, self.clients.finish(tasks, received)), missing, refused
        )

    def evaluate(
        self, tasks: Sequence[EvaluateTask], deadline_s: float | None
    ) -> EvaluationOutcome:
        """The clients check each task here, the workers score the admitted ones."""
        futures: list[tuple[EvaluateTask, Future[EvaluationReport]]] = []
        missing: list[str] = []
        for task in tasks:
            try:
                self.clients.get(task.client_id).admit_evaluation(task, self.dim)
            except (ProtocolError, ConfigError):
                missing.append(task.client_id)
                continue
            futures.append((task, self.pool.submit(_worker_evaluate, task)))
        done, _ = wait([f for _, f in futures], timeout=deadline_s)
        reports: list[EvaluationReport] = []
        for task, future in futures:
            if future in done and future.exception() is None:
                reports.append(future.result())
            else:
                future.cancel()
                missing.append(task.client_id)
        return EvaluationOutcome(reports, missing)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
